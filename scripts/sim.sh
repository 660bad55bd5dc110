#!/usr/bin/env bash
# Set up (idempotent) and run the whole stack in simulation mode on this machine: a real Mosquitto,
# the simulated CAEN crate (EPICS IOC), Julabo chiller and Ph2_ACF, the three services and Node-RED.
# Ctrl-C stops everything. Options are passed to dcs-sim (see .venv/bin/dcs-sim --help).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/setup.sh" sim
exec "$repo/.venv/bin/dcs-sim" "$@"
