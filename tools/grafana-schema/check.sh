#!/usr/bin/env bash
# Check Grafana dashboards against Grafana's own schema (@grafana/schema), with the pinned
# packages of package-lock.json (installed here on first use, or when the lock file changes).
# Usage: tools/grafana-schema/check.sh [DASHBOARD.json...]   (default: grafana/dashboards/*.json)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for tool in node npm; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "$tool is missing: install Node.js 18+ and npm (Debian: apt-get install nodejs npm)" >&2
    exit 2
  }
done
installed="$here/node_modules/.package-lock.json"
if [ ! -f "$installed" ] || [ "$here/package-lock.json" -nt "$installed" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
if [ "$#" -eq 0 ]; then
  set -- "$here"/../../grafana/dashboards/*.json
fi
exec node "$here/check.mjs" "$@"
