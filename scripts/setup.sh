#!/usr/bin/env bash
# Set up trackerdcs on a fresh Debian 12 / Ubuntu 24.04 machine. Idempotent: re-running only fills gaps.
#   scripts/setup.sh sim    system packages, Python venv (.venv), Node-RED  (enough for scripts/sim.sh)
#   scripts/setup.sh test   all of the above plus InfluxDB, Chromium and podman  (for scripts/test.sh)
# Needs root or sudo for apt-get. Python >= 3.11.
set -euo pipefail
profile=${1:-test}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "setup: apt-get install ${missing[*]}" >&2
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# 1. System packages: Mosquitto (the real broker), Python build tools, Node.js for Node-RED.
apt_install mosquitto mosquitto-clients python3-venv python3-dev gcc ca-certificates openssl
command -v node >/dev/null || apt_install nodejs npm

# 2. Python: one venv with the shared package, the three services and their simulators (editable).
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "setup: Python >= 3.11 needed ($PY is $("$PY" --version))" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.trackerdcs-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: pip install -e .[test]" >&2
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  echo "$want" > "$stamp"
fi

# 3. Node-RED project (pinned by node-red/package-lock.json).
if [ -x node-red/install ]; then
  lock=$(sha256sum node-red/package-lock.json | cut -c1-16)
  if [ "$(cat node-red/node_modules/.trackerdcs-installed 2>/dev/null)" != "$lock" ]; then
    node-red/install >&2
    echo "$lock" > node-red/node_modules/.trackerdcs-installed
  fi
fi

# 4. Test-only tools: InfluxDB 1.x and Chromium (gateway tests), podman (pod test).
if [ "$profile" = test ]; then
  [ -x scripts/setup-gateway.sh ] && $SUDO scripts/setup-gateway.sh
  [ -x scripts/setup-deploy.sh ] && $SUDO scripts/setup-deploy.sh
fi
echo "setup: done ($profile)" >&2
