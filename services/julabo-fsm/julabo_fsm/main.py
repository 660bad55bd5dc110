"""``julabo-fsm --config julabo.yml``: run the Julabo service until SIGTERM/SIGINT."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from trackerdcs.servicemain import run_service

from .app import JulaboApp, JulaboConfig


def main(argv: Sequence[str] | None = None) -> int:
    return run_service(
        "julabo-fsm",
        __doc__,
        lambda cfg, mqtt: JulaboApp(JulaboConfig.from_config(cfg), mqtt),
        argv,
        config_help="YAML file with mqtt: and julabo: sections",
    )


if __name__ == "__main__":
    sys.exit(main())
