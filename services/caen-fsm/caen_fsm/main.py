"""``caen-fsm --config caen.yml``: the CAEN crate service. Runs until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from trackerdcs.config import MqttSettings
from trackerdcs.servicemain import Runnable, run_service

log = logging.getLogger("caen_fsm")


def build(raw: dict[str, Any], settings: MqttSettings) -> Runnable:
    from .config import parse_config

    config = parse_config(raw)
    from .app import CaenApp  # imports pyepics: EPICS_CA_* must be in the environment by now

    # Several busy threads (MQTT, CA callbacks, worker, commands) share the GIL: hand it over every 1 ms
    # instead of 5 ms so a command is not queued behind a burst of monitor updates.
    sys.setswitchinterval(0.001)
    app = CaenApp(config, settings)
    log.info(
        "caen-fsm: crate %s, %d channels, %d modules, %d PVs",
        config.system,
        len(config.channels),
        len(config.modules),
        len(app.plant.pv_names),
    )
    return app


def main(argv: Sequence[str] | None = None) -> int:
    return run_service(
        "caen-fsm", __doc__, build, argv, config_help="YAML config (mqtt:, system:, channels:, global:, limits:)"
    )


if __name__ == "__main__":
    sys.exit(main())
