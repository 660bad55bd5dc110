#!/usr/bin/env bash
# Install what the operator gateway (Node-RED, Grafana/Telegraf checks, UI test) needs. Idempotent.
#   apt: influxdb (InfluxDB 1.x for the Grafana query test), chromium (operator UI screenshot test)
#   npm: node-red/ dependencies from package-lock.json (Node-RED 4.1, Dashboard 2.0, test helper, mocha)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

need=()
command -v influxd >/dev/null || need+=(influxdb)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
  # Debian starts an influxdb system service on install; the tests run their own instance on free ports.
  $SUDO systemctl disable --now influxdb 2>/dev/null || true
fi

command -v node >/dev/null || { echo "node (>= 18.5) is required for node-red/ (apt-get install nodejs npm)" >&2; exit 1; }
lock="$repo/node-red/package-lock.json"
stamp="$repo/node-red/node_modules/.package-lock.json"
if [ ! -f "$stamp" ] || [ "$lock" -nt "$stamp" ]; then
  "$repo/node-red/install"
else
  echo "node-red/node_modules up to date"
fi
