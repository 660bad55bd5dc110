"""``ph2acf-bridge --config PATH``: run the bridge until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from trackerdcs.config import ConfigError, MqttSettings, load_yaml
from trackerdcs.logsetup import setup_logging

from .app import Bridge
from .settings import load_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ph2acf-bridge", description="Ph2_ACF calibration runs over MQTT")
    parser.add_argument("--config", required=True, help="YAML configuration (mqtt, ph2acf, storage sections)")
    parser.add_argument("--log-level", default=None)
    args = parser.parse_args(argv)
    setup_logging(args.log_level, name="ph2acf-bridge")
    try:
        config = load_yaml(args.config)
        mqtt_settings = MqttSettings.from_config(config.get("mqtt"))
        settings = load_settings(config)
    except ConfigError as exc:
        print(f"ph2acf-bridge: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    bridge = Bridge(settings, mqtt_settings)
    bridge.start()
    while not stop.wait(1.0):
        pass
    bridge.stop()


if __name__ == "__main__":
    main()
