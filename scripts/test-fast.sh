#!/usr/bin/env bash
# The fast lane: the specifications of the pure cores (protocols, status words, state machines, decisions,
# recipes, simulator models), no process, socket or device; well under a minute. The full suite is
# scripts/test.sh. Extra arguments go to pytest, e.g. scripts/test-fast.sh -k julabo
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/setup.sh sim
exec .venv/bin/python -m pytest -m fast -q -p no:cacheprovider "$@"
