"""The ``main()`` every service shares: ``<prog> --config FILE [--log-level L]``, run until SIGTERM/SIGINT.

A configuration error prints one line naming the file, the key and what was expected, and exits with status 2
(the pod's restart policy then shows it crash-looping with that line in its log instead of running
half-configured). Every service reads its file through strict models (:mod:`trackerdcs.configmodel`), so a wrong
type or an unknown key is such an error, never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import ValidationError

from .config import ConfigError, MqttSettings, load_yaml
from .configmodel import describe
from .logsetup import setup_logging


class Runnable(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


def run_service(
    prog: str,
    description: str,
    build: Callable[[dict[str, Any], MqttSettings], Runnable],
    argv: Sequence[str] | None = None,
    config_help: str = "YAML configuration with an mqtt: section",
) -> int:
    """Parse the command line, load the config, ``build(config, mqtt_settings)`` the app, run it until a signal."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default, or $DCS_LOG_LEVEL), WARNING")
    args = parser.parse_args(argv)
    setup_logging(args.log_level, name=prog)
    try:
        config = load_yaml(args.config)
        app = build(config, MqttSettings.from_config(config.get("mqtt")))
    except (ConfigError, ValidationError) as exc:
        message = describe(exc) if isinstance(exc, ValidationError) else str(exc)
        if args.config not in message:
            message = f"{args.config}: {message}"
        print(f"{prog}: configuration error: {' '.join(message.split())}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    app.start()
    stop.wait()
    app.stop()
    return int(getattr(app, "exit_code", 0) or 0)  # an app may end itself with a status (a refused start)
