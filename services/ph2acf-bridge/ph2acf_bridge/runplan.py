"""The bridge's decisions about a run, free of I/O (specified in tests/ph2acf/test_runplan.py).

* :func:`start_refusal` — whether a ``start`` must be refused, and the operator's answer;
* :func:`run_uid` — the unique id of a run;
* :func:`run_outcome` — what the end of a run amounts to (``done``, ``aborted``, ``failed``) and its error;
* :func:`after_storing` — the state trigger once the run is stored;
* :func:`next_run_number` — run numbers in TCP mode (a persistent counter, never below Ph2_ACF's own or the
  archive's);
* :func:`run_start_event`, :func:`run_stop_event`, :func:`error_event` — the events announcing a run.

:class:`~ph2acf_bridge.app.Bridge` does the talking (MQTT, files, the runner) and asks these functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .fsm import ACTIVE, RunState, Trigger
from .runner import RunEnd


@dataclass
class RunContext:
    """Everything known about the run in progress."""

    uid: str
    calibration: str
    config_file: Path
    config_xml: str
    modules: list[str]
    operator: str
    comment: str
    conditions_start: dict[str, Any]
    run: int | None = None
    start_ts: float | None = None
    progress: float = 0.0
    timed_out: bool = False
    runner: Any = None  # the Runner driving this run (I/O; never used by the decisions)
    started_event_sent: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Announcement:
    """An event for ``<root>/event``."""

    kind: str
    message: str
    severity: str = "info"
    data: dict[str, Any] = field(default_factory=dict)


def start_refusal(
    *,
    operator: str,
    state: RunState,
    current: RunContext | None,
    blocked: dict[str, Any] | None,
    refuse_when_tripped: bool,
    interlock: str | None,
) -> str | None:
    """Why a ``start`` is refused now (None: it may go ahead), checked in this order: no operator; a run in
    progress; a scan left running on the Ph2_ACF server (``blocked``, TCP mode only); the interlock not OK
    (when ``refuse_when_tripped``; an interlock never heard of does not refuse)."""
    if not operator.strip():
        return "operator must not be empty"
    if state in ACTIVE:
        return (
            f"a run is already in progress (run {current.run if current else '?'}, "
            f"{current.calibration if current else '?'}, state {state.value}); abort it or wait for it to finish"
        )
    if blocked is not None:
        return (
            f"run {blocked.get('run')} was left running on the Ph2_ACF server after an abort timed out; "
            "stop it there (or restart the server), then send server_stopped"
        )
    if refuse_when_tripped and interlock not in (None, "OK"):
        return f"interlock is {interlock}: runs are refused until it is OK"
    return None


def run_uid(stand: str, utc_stamp: str, token: str) -> str:
    """``<stand>-<UTC yyyymmddThhmmss>-<8 random hex>``: unique even for runs without a number."""
    return f"{stand}-{utc_stamp}-{token[:8]}"


def run_outcome(end: RunEnd, timed_out: bool) -> tuple[str, str | None]:
    """(outcome, error): a run that errored or exceeded ``max_run_s`` failed (the time-out is its error, even
    when the runner reports the abort it caused); otherwise an abort is ``aborted``, the rest ``done``."""
    if timed_out:
        return "failed", "run exceeded max_run_s"
    if end.error:
        return "failed", end.error
    return ("aborted" if end.aborted else "done"), None


def after_storing(outcome: str) -> Trigger:
    """A failed run leaves the bridge in ERROR (a new start is allowed from there); any other in IDLE."""
    return Trigger.STORED_FAILED if outcome == "failed" else Trigger.STORED


def next_run_number(counter_text: str | None, ph2acf_next: int, archived_max: int | None) -> tuple[int, str]:
    """TCP mode: (this run's number, the counter file's new text). The number is the largest of the stored
    counter (unreadable: 0), the number Ph2_ACF itself would use next, and one past the archive's highest."""
    try:
        stored = int((counter_text or "").strip())
    except ValueError:
        stored = 0
    run = max(stored, ph2acf_next, (archived_max + 1) if archived_max is not None else 0)
    return run, f"{run + 1}\n"


def run_start_event(ctx: RunContext) -> Announcement:
    """``run_start``: carries ``start_ts`` as the stored document does, so annotations and documents line up."""
    return Announcement(
        "run_start",
        f"run {ctx.run} ({ctx.calibration}) started by {ctx.operator}",
        "info",
        {
            "run": ctx.run,
            "calibration": ctx.calibration,
            "operator": ctx.operator,
            "modules": ctx.modules,
            "start_ts": ctx.start_ts,
            "uid": ctx.uid,
        },
    )


def run_stop_event(ctx: RunContext, outcome: str, stop_ts: float) -> Announcement | None:
    """``run_stop`` (a warning unless ``done``); None when no ``run_start`` was announced (launch failed)."""
    if not ctx.started_event_sent:
        return None
    return Announcement(
        "run_stop",
        f"run {ctx.run} ({ctx.calibration}) {outcome}",
        "info" if outcome == "done" else "warning",
        {
            "run": ctx.run,
            "calibration": ctx.calibration,
            "outcome": outcome,
            "start_ts": ctx.start_ts,
            "stop_ts": stop_ts,
            "uid": ctx.uid,
        },
    )


def error_event(ctx: RunContext, error: str | None) -> Announcement | None:
    """An alarm for a run that failed (None when it did not)."""
    if not error:
        return None
    return Announcement(
        "error",
        f"run {ctx.run} ({ctx.calibration}) failed: {error}",
        "alarm",
        {"run": ctx.run, "calibration": ctx.calibration, "error": error, "uid": ctx.uid},
    )
