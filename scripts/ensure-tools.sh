#!/usr/bin/env bash
# Make sure the operator tools the tests need are on PATH: promtool (Debian's prometheus),
# amtool (Debian's prometheus-alertmanager) and docker-compose (Debian's, to check the compose
# file without an engine).
# Idempotent: does nothing when all three are installed.
set -euo pipefail

TOOLS=(promtool amtool docker-compose)
PACKAGES=(prometheus prometheus-alertmanager docker-compose)
DAEMONS=(prometheus prometheus-alertmanager)

all_present() {
  local tool
  for tool in "${TOOLS[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || return 1
  done
}

if all_present; then
  echo "promtool: $(command -v promtool); amtool: $(command -v amtool);" \
    "docker-compose: $(command -v docker-compose)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

# The Debian packages ship daemons and try to start them; we only want promtool and amtool.
# policy-rc.d exit 101 tells invoke-rc.d/deb-systemd-invoke not to start services.
POLICY=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod 755 "$POLICY"
  created_policy=1
fi
remove_policy() {
  if [ "$created_policy" -eq 1 ]; then
    $SUDO rm -f "$POLICY"
  fi
}
trap remove_policy EXIT

$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null

# Belt and braces: if a service manager started a daemon anyway, stop and disable it.
for daemon in "${DAEMONS[@]}"; do
  if [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now "$daemon" >/dev/null 2>&1 || true
  elif [ -x "/etc/init.d/$daemon" ]; then
    if $SUDO "/etc/init.d/$daemon" status >/dev/null 2>&1; then
      $SUDO "/etc/init.d/$daemon" stop >/dev/null 2>&1 || true
    fi
  fi
done

for tool in "${TOOLS[@]}"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$tool still missing after installing: ${PACKAGES[*]}" >&2
    exit 1
  fi
done
echo "promtool: $(command -v promtool) ($(promtool --version 2>&1 | head -n1))"
echo "amtool: $(command -v amtool) ($(amtool --version 2>&1 | head -n1))"
