"""What every way of driving Ph2_ACF (subprocess or TCP) hands back to the bridge."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .logparse import LogEvent

EventSink = Callable[[LogEvent], None]


class RunnerError(Exception):
    """The run could not be launched; the message says why (shown to the operator)."""


@dataclass
class RunEnd:
    """How a run ended, as observed by a runner."""

    exit_code: int | None = None
    error: str | None = None
    aborted: bool = False
    run: int | None = None
    result_file: Path | None = None
    log_tail: list[str] = field(default_factory=list)
    left_running: bool = False  # TCP: the bridge gave up waiting; the scan still runs on the Ph2_ACF server


class Runner(Protocol):
    """Launch one calibration, follow it to its end, abort it on request (from another thread)."""

    mode: str

    def launch(self, calibration: str, config_file: Path) -> int | None:
        """Start the run; return its run number if already known. Raises RunnerError."""

    def follow(self, on_event: EventSink) -> RunEnd:
        """Block until the run ends, reporting progress and log events."""

    def abort(self) -> None:
        """Ask the run to stop early (returns at once; ``follow`` returns once it has stopped)."""
