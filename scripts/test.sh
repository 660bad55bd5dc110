#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: lint, then pytest (which also drives the Node-RED
# mocha tests, the InfluxDB/Grafana query test, headless Chromium and the podman pod test).
# Extra arguments go to pytest, e.g. scripts/test.sh tests/foundation -x
#
# Two phases: most tests wait on processes, brokers and simulated devices rather than compute, so they run in
# parallel (pytest-xdist; TRACKERDCS_TEST_WORKERS workers, default 3 on 2 cores; whole files per worker, so that a
# module's broker or stack starts once); tests marked `serial` time the interlock path in milliseconds, judge CPU
# and memory, or run the pod, and run afterwards, alone, so that a neighbour's load never decides their figures.
# TRACKERDCS_TEST_WORKERS=0 runs everything in one process, in order.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/setup.sh test
.venv/bin/ruff check .
.venv/bin/ruff format --check . >/dev/null || { .venv/bin/ruff format --check . ; exit 1; }
workers=${TRACKERDCS_TEST_WORKERS:-3}
if [ "$workers" = 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
# pytest exits 5 when a phase selects no test (e.g. scripts/test.sh tests/foundation has nothing serial)
phase() { local rc=0; .venv/bin/python -m pytest "$@" || rc=$?; [ "$rc" = 5 ] && rc=0; return "$rc"; }
rc=0
echo "== parallel part ($workers workers) ==" >&2
phase -n "$workers" --dist loadfile -m "not serial" "$@" || rc=$?
echo "== serial part ==" >&2
phase -m serial "$@" || rc=$?
exit "$rc"
