"""One log format for every trackerdcs process: UTC timestamps, level, logger, message, on stderr."""

from __future__ import annotations

import logging
import os
import sys
import time


def setup_logging(level: str | int | None = None, *, name: str | None = None) -> None:
    """Configure the root logger once. ``level`` defaults to ``$DCS_LOG_LEVEL`` or INFO."""
    level = level or os.environ.get("DCS_LOG_LEVEL", "INFO")
    fmt = "%(asctime)s.%(msecs)03dZ %(levelname)-7s " + (f"{name} " if name else "") + "%(name)s: %(message)s"
    formatter = logging.Formatter(fmt, datefmt="%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if isinstance(level, int) else level.upper())
    for noisy in ("transitions", "epics", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
