"""``ph2acf-bridge --config PATH``: run the bridge until SIGTERM/SIGINT."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from trackerdcs.servicemain import run_service

from .app import Bridge
from .settings import load_settings


def main(argv: Sequence[str] | None = None) -> int:
    return run_service(
        "ph2acf-bridge",
        "Ph2_ACF calibration runs over MQTT",
        lambda cfg, mqtt: Bridge(load_settings(cfg), mqtt),
        argv,
        config_help="YAML configuration (mqtt, ph2acf, storage sections)",
    )


if __name__ == "__main__":
    sys.exit(main())
