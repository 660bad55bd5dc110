"""Decisions the driver takes about the chiller's safety, free of I/O (unit-tested in tests/julabo/test_safety_core.py).

* :class:`Outage` — one communication gap (silent replies, a lost link, a reconnect) is one episode, from its first
  sign until its verdict *and* the restoration of lost values are done. What the operator had set before the gap
  is its baseline; a reply lost while values are being restored does not open a second episode.
* :func:`judge_gap` — after the gap: did the chiller lose power (stopped although it was running and nobody
  stopped it, or values back at power-on defaults), and what may be written back (never "start").
* :class:`RunWatch` — was the chiller running, and did the DCS ask for the last stop? A stop nobody at the DCS
  asked for (front panel) is reported; a restart seen on the chiller makes the next stop news again.
* :func:`stop_verdict` — a stop counts only when the chiller itself says it is stopped.
* :func:`fresh` — a reading older than the limit is no reading.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .protocol import Reading, Setting, StatusCategory, StatusReport

# The settings a power cut loses and that the service may put back (never "running"), in restore order:
# setpoints before the selection, so the selected setpoint is right the moment it becomes active.
RESTORABLE: tuple[tuple[Setting, Reading], ...] = (
    (Setting.SETPOINT_1, Reading.SETPOINT_1),
    (Setting.SETPOINT_2, Reading.SETPOINT_2),
    (Setting.SETPOINT_3, Reading.SETPOINT_3),
    (Setting.ACTIVE_SETPOINT, Reading.ACTIVE_SETPOINT),
    (Setting.CONTROL_SENSOR, Reading.CONTROL_SENSOR),
    (Setting.PUMP_STAGE, Reading.PUMP_STAGE),
)


class OutagePhase(enum.StrEnum):
    NONE = "none"  # no gap: the driver's view of the chiller is continuous
    OPEN = "open"  # a gap began; the baseline is what the chiller held before it
    JUDGING = "judging"  # after the gap: verdict and restoration under way


@dataclass
class Outage:
    """One communication gap at a time, with the values the chiller held before it."""

    phase: OutagePhase = OutagePhase.NONE
    baseline: dict[Reading, Any] | None = None

    def begin(self, values: Mapping[Reading, Any], was_running: bool | None, *, link_lost: bool = False) -> bool:
        """A sign of a gap (a silent reply, or ``link_lost``). Opens an episode with ``values`` as baseline
        unless one is open. While judging, a lone silent reply is part of the same episode; a lost link
        re-opens it with the original baseline (the restoration did not finish). True if an episode opened."""
        if self.phase is OutagePhase.NONE:
            self.baseline = dict(values)
            self.baseline[Reading.RUNNING] = was_running
            self.phase = OutagePhase.OPEN
            return True
        if self.phase is OutagePhase.JUDGING and link_lost:
            self.phase = OutagePhase.OPEN
        return False

    @property
    def open(self) -> bool:
        return self.phase is OutagePhase.OPEN

    def own_change(self, reading: Reading, value: Any) -> None:
        """The DCS itself changed ``reading``: that is no value lost to a power cut."""
        if self.baseline is not None:
            self.baseline[reading] = value

    def judge(self) -> dict[Reading, Any]:
        """Start the verdict; returns the baseline. Silent replies from now on belong to this episode."""
        self.phase = OutagePhase.JUDGING
        return dict(self.baseline or {})

    def close(self) -> None:
        """Verdict given and restoration done: the next gap is a new episode."""
        self.phase = OutagePhase.NONE
        self.baseline = None


@dataclass(frozen=True)
class GapVerdict:
    """What a gap meant. ``lost`` maps each changed setting to its value before the gap."""

    power_failure: bool
    was_running: bool
    lost: dict[Reading, Any] = field(default_factory=dict)
    restore: tuple[tuple[Setting, Reading, Any], ...] = ()


def judge_gap(
    before: Mapping[Reading, Any],
    now: Mapping[Reading, Any],
    *,
    running_now: bool | None,
    stop_commanded: bool,
    restore_enabled: bool,
    can_write: Callable[[Setting], bool],
) -> GapVerdict:
    """The chiller comes back from a power cut stopped, with power-on values. Values read as None on either
    side are unknown, never "lost". The restore plan never selects an absent external sensor."""
    was_running = bool(before.get(Reading.RUNNING))
    lost = {
        r: before[r]
        for _, r in RESTORABLE
        if before.get(r) is not None and now.get(r) is not None and before[r] != now[r]
    }
    stopped = was_running and running_now is False and not stop_commanded
    if not (stopped or lost):
        return GapVerdict(False, was_running)
    plan: list[tuple[Setting, Reading, Any]] = []
    if restore_enabled:
        for setting, reading in RESTORABLE:
            if reading not in lost or not can_write(setting):
                continue
            if reading is Reading.CONTROL_SENSOR and lost[reading] == 1 and now.get(Reading.EXTERNAL_TEMP) is None:
                continue
            plan.append((setting, reading, lost[reading]))
    return GapVerdict(True, was_running, lost, tuple(plan))


@dataclass
class RunWatch:
    """Whether the chiller was running (None: unknown, e.g. in alarm) and whether the DCS commanded the last stop."""

    was_running: bool | None = None
    stop_commanded: bool = False

    def commanded(self, running: bool) -> None:
        """The DCS itself started (True) or stopped (False) the chiller."""
        self.stop_commanded = not running
        self.was_running = running

    def alarm(self) -> None:
        """An alarm STATUS: the chiller stops itself; whether it ran is no longer known."""
        self.was_running = None

    def observe(self, running: bool, *, in_gap: bool) -> bool:
        """A STATUS said started/stopped. True when this is a stop nobody at the DCS asked for, seen without a
        communication gap (a gap is judged by :func:`judge_gap` instead). Not updated during a gap."""
        external = bool(self.was_running) and not running and not self.stop_commanded and not in_gap
        if not in_gap:
            self.was_running = running
            if running:
                self.stop_commanded = False  # running again (front panel?): the next stop is news
        return external

    def after_gap(self, running_now: bool | None) -> None:
        """The gap is judged: from now on compare with what the chiller does now."""
        if running_now is not None:
            self.was_running = running_now
            if running_now:
                self.stop_commanded = False


class Verdict(enum.StrEnum):
    DONE = "done"
    NOT_DONE = "not_done"
    UNKNOWN = "unknown"  # nothing readable came back: try again


def stop_verdict(status: StatusReport | None, mode: int | None) -> Verdict:
    """Is the chiller stopped? ``status`` is the operating STATUS read after the stop (None if unreadable),
    ``mode`` the IN_MODE_05 read-back (0 stopped, 1 started, None unreadable). Any sign of running means
    not stopped; stopped needs the STATUS to say so (or an alarm STATUS, which stops the chiller, with the
    mode reading 0)."""
    if (status is not None and status.running is True) or mode == 1:
        return Verdict.NOT_DONE
    if status is None:
        return Verdict.UNKNOWN
    if status.running is False:
        return Verdict.DONE
    if status.category is StatusCategory.ALARM and mode == 0:
        return Verdict.DONE
    return Verdict.UNKNOWN


def fresh(value: Any, read_at: float | None, now: float, limit_s: float) -> Any:
    """``value`` if it was read at most ``limit_s`` before ``now``, else None (a stale reading is unknown)."""
    if read_at is None or now - read_at > limit_s:
        return None
    return value
