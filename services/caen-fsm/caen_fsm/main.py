"""``caen-fsm --config caen.yml``: the CAEN crate service. Runs until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from trackerdcs.config import ConfigError, MqttSettings, load_yaml
from trackerdcs.logsetup import setup_logging

log = logging.getLogger("caen_fsm")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="caen-fsm", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config (mqtt:, system:, channels:, global:, limits:)")
    parser.add_argument("--log-level", default=None)
    args = parser.parse_args(argv)
    setup_logging(args.log_level, name="caen-fsm")
    try:
        raw = load_yaml(args.config)
        from .config import parse_config

        config = parse_config(raw)
        settings = MqttSettings.from_config(raw.get("mqtt"))
    except ConfigError as exc:
        print(f"caen-fsm: configuration error: {exc}", file=sys.stderr)
        return 2
    from .app import CaenApp  # imports pyepics: EPICS_CA_* must be in the environment by now

    # Several busy threads (MQTT, CA callbacks, worker, commands) share the GIL: hand it over every 1 ms
    # instead of 5 ms so a command is not queued behind a burst of monitor updates.
    sys.setswitchinterval(0.001)
    app = CaenApp(config, settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info(
        "caen-fsm: crate %s, %d channels, %d modules, %d PVs",
        config.system,
        len(config.channels),
        len(config.modules),
        len(app.plant.pv_names),
    )
    app.start()
    stop.wait()
    log.info("caen-fsm stopping")
    app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
