"""``burnin --config burnin.yml``: the burn-in sequencer service. Runs until SIGTERM/SIGINT."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from trackerdcs.config import MqttSettings
from trackerdcs.servicemain import Runnable, run_service


def build(raw: dict[str, Any], settings: MqttSettings) -> Runnable:
    from .app import BurninApp
    from .settings import parse_settings

    return BurninApp(parse_settings(raw), settings)


def main(argv: Sequence[str] | None = None) -> int:
    # the MQTT thread hands a status message to the loop thread, which ticks at once: hand the GIL over every
    # millisecond rather than Python's 5 ms default (as caen-fsm does)
    sys.setswitchinterval(0.001)
    return run_service("burnin", __doc__, build, argv, config_help="YAML config (mqtt:, modules:, limits:, ...)")


if __name__ == "__main__":
    sys.exit(main())
