#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: lint, then pytest (which also drives the Node-RED
# mocha tests, the InfluxDB/Grafana query test, headless Chromium and the podman pod test).
# Extra arguments go to pytest, e.g. scripts/test.sh tests/foundation -x
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/setup.sh test
.venv/bin/ruff check .
.venv/bin/ruff format --check . >/dev/null || { .venv/bin/ruff format --check . ; exit 1; }
exec .venv/bin/python -m pytest "$@"
