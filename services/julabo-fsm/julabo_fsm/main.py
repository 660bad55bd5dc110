"""``julabo-fsm --config julabo.yml``: run the Julabo service until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from trackerdcs.config import ConfigError, MqttSettings, load_yaml
from trackerdcs.logsetup import setup_logging

from .app import JulaboApp, JulaboConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="julabo-fsm", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML file with mqtt: and julabo: sections")
    parser.add_argument("--log-level", default=None)
    args = parser.parse_args(argv)
    setup_logging(args.log_level, name="julabo-fsm")
    try:
        cfg = load_yaml(args.config)
        app = JulaboApp(JulaboConfig.from_config(cfg), MqttSettings.from_config(cfg.get("mqtt")))
    except ConfigError as exc:
        print(f"julabo-fsm: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    app.start()
    done.wait()
    app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
