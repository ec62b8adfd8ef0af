#!/usr/bin/env bash
# Make sure the operator tools the tests need are on PATH: promtool (Debian's prometheus) and
# docker-compose (Debian's, to check the compose file without an engine).
# Idempotent: does nothing when both are installed.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v docker-compose >/dev/null 2>&1; then
  echo "promtool: $(command -v promtool); docker-compose: $(command -v docker-compose)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

# The Debian package ships a daemon and tries to start it; we only want promtool.
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
  apt-get install -y -qq --no-install-recommends prometheus docker-compose >/dev/null

# Belt and braces: if a service manager started the daemon anyway, stop and disable it.
if [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
elif [ -x /etc/init.d/prometheus ]; then
  if $SUDO /etc/init.d/prometheus status >/dev/null 2>&1; then
    $SUDO /etc/init.d/prometheus stop >/dev/null 2>&1 || true
  fi
fi

for tool in promtool docker-compose; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$tool still missing after installing the prometheus and docker-compose packages" >&2
    exit 1
  fi
done
echo "promtool: $(command -v promtool) ($(promtool --version 2>&1 | head -n1))"
