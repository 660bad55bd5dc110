"""What the service knows and decides about the chiller, free of I/O (specified in tests/julabo/test_chiller_core.py).

:class:`ChillerCore` is fed what the I/O thread observes — replies (parsed), silence, garbled lines, a link
opened or lost, the time — and answers with decisions: the notices to publish (events, and when the status
must go out), whether the link must be dropped, which values to read next, what to put back after a power
cut, whether a command may be sent. It holds every flag the power-failure and external-stop logic needs
(with :class:`~julabo_fsm.safety.Outage` and :class:`~julabo_fsm.safety.RunWatch`) and the state machine
(:class:`~julabo_fsm.fsm.ChillerFsm`), which moves only by its triggers.

:class:`~julabo_fsm.driver.ChillerDriver` is the thin adapter: it owns the link, the thread, the command
queue, and does what the core decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .fsm import ChillerFsm, State, Trigger
from .protocol import (
    SETPOINT_READINGS,
    ModelMap,
    Reading,
    Setting,
    StatusCategory,
    StatusReport,
)
from .safety import GapVerdict, Outage, OutagePhase, RunWatch, fresh, judge_gap

if TYPE_CHECKING:
    from .driver import DriverConfig

FAST_READINGS = (Reading.BATH_TEMP, Reading.HEATING_POWER, Reading.EXTERNAL_TEMP)
SLOW_READINGS = (
    Reading.SETPOINT_1,
    Reading.SETPOINT_2,
    Reading.SETPOINT_3,
    Reading.ACTIVE_SETPOINT,
    Reading.CONTROL_SENSOR,
    Reading.PUMP_STAGE,
    Reading.RUNNING,
)
# Measured values published as null once older than ``stale_after_s`` (with their read time alongside).
MEASURED = (Reading.BATH_TEMP, Reading.EXTERNAL_TEMP, Reading.HEATING_POWER)
STATUS_KEY = "status"
#: A written value counts as taken when the read-back is this close (the chiller shows two decimals).
WRITE_TOLERANCE = 0.011


@dataclass(frozen=True)
class Notice:
    """An event for ``julabo/event``."""

    kind: str
    message: str
    severity: str = "info"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Publish:
    """Publish the status now (``force``: even if nothing changed beyond the deadbands)."""

    force: bool = False


Output = Notice | Publish


def took(wanted: float | int, got: Any) -> bool:
    """Did the chiller take a written value? It must read back within :data:`WRITE_TOLERANCE`."""
    return got is not None and abs(float(got) - float(wanted)) <= WRITE_TOLERANCE


def start_took(report: StatusReport) -> str | None:
    """After ``start``: None if STATUS says running, else the operator's answer."""
    if report.running is True:
        return None
    return f"the chiller did not start: STATUS {report.code:02d} {report.text}"


def stop_failure_reason(report: StatusReport | None, mode: int | None, refusal: StatusReport | None) -> str:
    """Why a stop is not confirmed, for the log and the ``stop_failed`` alarm."""
    why = f"STATUS {report.code:02d} {report.text}" if report is not None else "no readable STATUS"
    if mode is not None:
        why += f", IN_MODE_05 reads {mode}"
    if refusal is not None:
        why += f" (the chiller refused the stop: {refusal.code:03d} {refusal.text})"
    return why


def backoff_s(failures: int, minimum: float, maximum: float) -> float:
    """The wait before the next connection attempt: doubling from ``minimum`` per failure, capped."""
    return min(maximum, minimum * 2 ** max(0, failures - 1))


class ChillerCore:
    """The chiller as the service knows it, and the decisions about it (no I/O, no clock: ``now`` is given)."""

    def __init__(self, model: ModelMap, config: DriverConfig) -> None:
        self.model = model
        self.config = config
        self._out: list[Output] = []
        self.fsm = ChillerFsm(self._state_changed)
        self.values: dict[Reading, Any] = {}
        self.read_at: dict[str, float] = {}  # wall-clock time each value (and STATUS) was last read
        self.status: StatusReport | None = None
        self.version: str | None = None
        self.last_error: str | None = None
        self.outage = Outage()
        self.run = RunWatch()
        self.counters = {"queries": 0, "silent": 0, "garbled": 0, "reconnects": 0, "cycles": 0}
        self.missed = 0  # silent replies in a row
        self.garbled_streak = 0  # unintelligible replies in a row
        self.slow_index = 0  # rotation through the slow readings
        self.sweep_pending = True  # read every value in the next cycle
        self.ever_connected = False
        self.failures = 0  # failed connection attempts in a row

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> State:
        return State(self.fsm.state)

    @property
    def connected(self) -> bool:
        return self.fsm.connected

    def _take(self) -> list[Output]:
        out, self._out = self._out, []
        return out

    def _state_changed(self, old: State, new: State) -> None:
        self._out.append(
            Notice("state_change", f"chiller {old.value} -> {new.value}", "info", {"from": old.value, "to": new.value})
        )
        self._out.append(Publish(force=True))  # the status follows the link at once (values not yet read: null)

    # ------------------------------------------------------------------ the link
    def connect_failed(self, error: str) -> bool:
        """The link could not be opened or the chiller did not answer VERSION. True when worth a log line
        (the first failure, or a new reason)."""
        self.failures += 1
        worth = self.failures == 1 or self.last_error != error
        self.last_error = error
        return worth

    def retry_now(self) -> None:
        """The operator asked for a reconnect: the back-off starts again from its minimum."""
        self.failures = 0

    def backoff_s(self) -> float:
        """How long to wait before the next connection attempt."""
        return backoff_s(self.failures, self.config.reconnect_min_s, self.config.reconnect_max_s)

    def link_up(self, version: str, url: str) -> list[Output]:
        """The chiller answered VERSION. After a reconnect nothing cached is trusted (every value is unknown
        until read again) and the gap is judged once everything has been read."""
        self.version = version
        self.failures = 0
        self.missed = 0
        self.garbled_streak = 0
        self.sweep_pending = True
        if self.ever_connected:
            self.counters["reconnects"] += 1
            self.outage.begin(self.values, self.run.was_running, link_lost=True)
            self._out.append(Notice("reconnected", f"chiller link back on {url}", "info", {"model": version}))
        self.values.clear()
        self.read_at.clear()
        self.ever_connected = True
        self.last_error = None
        return self._take()

    def link_lost(self, reason: str, *, requested: bool = False) -> list[Output]:
        """The link is closed (``requested``: the operator asked for it, an action rather than an alarm)."""
        self.last_error = reason
        self.outage.begin(self.values, self.run.was_running, link_lost=True)
        if self.fsm.fire(Trigger.LINK_LOST):
            if requested:
                message = "chiller link closed: reconnect requested by the operator; connecting again now"
            else:
                message = f"chiller link lost: {reason}"
            severity = "info" if requested else "alarm"
            self._out.append(Notice("disconnected", message, severity, {"reason": reason, "requested": requested}))
            self._out.append(Publish(force=True))
        return self._take()

    def not_connected_message(self) -> str:
        return (
            f"chiller not connected (state {self.state.value}"
            + (f": {self.last_error}" if self.last_error else "")
            + "); the service keeps retrying, 'reconnect' retries now"
        )

    # ------------------------------------------------------------------ replies
    def asked(self) -> None:
        """A line went out to the chiller."""
        self.counters["queries"] += 1

    def silence(self) -> str | None:
        """No reply to a query: a sign of a gap. The reason to drop the link once ``max_missed`` replies in
        a row are missing, else None."""
        self.counters["silent"] += 1
        self.missed += 1
        self.outage.begin(self.values, self.run.was_running)
        if self.missed >= self.config.max_missed:
            return f"no reply to {self.missed} commands in a row"
        return None

    def replied(self) -> None:
        """A reply came (intelligible or not). After silence everything is read again: something may have
        happened meanwhile."""
        if self.missed:
            self.sweep_pending = True
        self.missed = 0

    def garbled(self, error: str) -> list[Output]:
        """An unintelligible reply; ``garbled_for_error`` in a row put the machine in ERROR."""
        self.counters["garbled"] += 1
        self.garbled_streak += 1
        if self.garbled_streak >= self.config.garbled_for_error and self.fsm.fire(Trigger.SAW_ERROR):
            self._out.append(Notice("error", f"chiller replies are unintelligible ({error})", "alarm"))
        return self._take()

    def reading(self, reading: Reading, value: Any, now: float) -> None:
        """A value read at wall-clock time ``now``."""
        self.garbled_streak = 0
        self.values[reading] = value
        self.read_at[reading.value] = now

    def status_line(self, report: StatusReport, now: float) -> list[Output]:
        """A STATUS reply. A command error (a refused command) changes nothing; an alarm is reported once per
        code, its end once; a stop nobody at the DCS asked for, seen without a gap, is reported; then the
        state machine sees the line."""
        self.garbled_streak = 0
        if report.category is StatusCategory.COMMAND_ERROR:
            return []
        self.read_at[STATUS_KEY] = now
        previous = self.status
        self.status = report
        data = {"status_code": report.code, "status_text": report.text}
        if report.category is StatusCategory.ALARM:
            if previous is None or previous.code != report.code:
                self._out.append(Notice("alarm", f"chiller alarm {report.code}: {report.text}", "alarm", data))
            self.run.alarm()
        elif previous is not None and previous.category is StatusCategory.ALARM:
            self._out.append(Notice("alarm_cleared", f"chiller alarm cleared; now {report.text}", "info", data))
        in_gap = self.outage.phase is not OutagePhase.NONE
        if report.running is not None and self.run.observe(report.running, in_gap=in_gap):
            message = "the chiller stopped without a stop command from the DCS (front panel?)"
            self._out.append(Notice("stopped_externally", message, "warning", data))
        self.fsm.observe(report)
        return self._take()

    # ------------------------------------------------------------------ polling
    def slow_items(self) -> list[Reading]:
        """The slow values to read in this cycle: all of them when a sweep is due, else the next in turn."""
        readable = [r for r in SLOW_READINGS if self.model.can_read(r)]
        if self.sweep_pending:
            return readable
        item = readable[self.slow_index % len(readable)]
        self.slow_index += 1
        return [item]

    def cycle_done(self, sweep: bool, complete: bool) -> bool:
        """A status cycle ended (``sweep``: it read everything; ``complete``: every query was answered).
        True when a gap is to be judged now (a complete sweep after silence or a reconnect)."""
        self.counters["cycles"] += 1
        if not (sweep and complete):
            return False
        self.sweep_pending = False
        return self.outage.open

    def sweep(self) -> None:
        """Read everything in the next cycle (``refresh``)."""
        self.sweep_pending = True

    # ------------------------------------------------------------------ after a gap
    def judge_gap(self) -> GapVerdict:
        """After a gap, with every value read again: did the chiller lose power meanwhile? It comes back
        stopped with power-on values. Without a power failure the gap is over; with one, the values in
        :meth:`to_restore` are to be put back, then :meth:`power_failure` closes it."""
        before = self.outage.judge()
        running_now = self.status.running if self.status else None
        verdict = judge_gap(
            before,
            self.values,
            running_now=running_now,
            stop_commanded=self.run.stop_commanded,
            restore_enabled=self.config.restore_after_power_failure,
            can_write=self.model.can_write,
        )
        self.run.after_gap(running_now)  # before restoring: a reply lost now must not look like a new stop
        if not verdict.power_failure:
            self.outage.close()
        return verdict

    def to_restore(self, verdict: GapVerdict) -> list[tuple[Setting, Reading, Any]]:
        """The restore plan without what the chiller already holds. Never ``start``."""
        return [(s, r, want) for s, r, want in verdict.restore if self.values.get(r) != want]

    def power_failure(self, verdict: GapVerdict, restored: dict[str, Any], failed: dict[str, str]) -> list[Output]:
        """The restoration is done (``failed``: reading -> why not): one ``power_failure`` alarm per gap."""
        self.outage.close()
        lost = {r.value: v for r, v in verdict.lost.items()}
        message = "chiller lost power: it is STOPPED and will not be restarted by the DCS; the operator decides"
        if lost:
            message += f"; values lost: {sorted(lost)}"
        if restored:
            message += f"; re-sent: {sorted(restored)}"
        if failed:
            message += f"; NOT restored: {sorted(failed)}"
        data = {"was_running": verdict.was_running, "lost": lost, "restored": restored, "not_restored": failed}
        return [Notice("power_failure", message, "alarm", data), Publish(force=True)]

    # ------------------------------------------------------------------ commands
    def commanded(self, running: bool) -> None:
        """The DCS itself started (True) or stopped (False) the chiller; a stop it asked for is no surprise."""
        self.run.commanded(running)
        self.outage.own_change(Reading.RUNNING, running)

    def own_change(self, reading: Reading, value: Any) -> None:
        """The DCS wrote ``reading`` and read it back: not a value lost to a power cut."""
        self.outage.own_change(reading, value)

    def remote_refusal(self) -> str | None:
        """A chiller in manual mode ignores remote commands: the answer, or None."""
        if self.status is not None and self.status.remote is False:
            return (
                f"chiller is in manual mode ({self.status.code:02d} {self.status.text}): it ignores remote "
                "commands; switch it to remote control on its front panel"
            )
        return None

    def start_refusal(self) -> str | None:
        """``start`` needs remote mode and no alarm (an alarm is cleared on the front panel, not remotely)."""
        remote = self.remote_refusal()
        if remote is not None:
            return remote
        if self.status is not None and self.status.code < 0:
            return f"chiller in alarm ({self.status.code:03d} {self.status.text}): clear it on the front panel first"
        return None

    def stop_failed(self, attempts: int, why: str) -> tuple[str, list[Output]]:
        """A stop still not confirmed after every attempt: the operator's answer, and the alarm."""
        message = f"the chiller did not stop after {attempts} attempts: {why}; it may still be RUNNING"
        return message, [
            Notice("stop_failed", message, "alarm", {"attempts": attempts, "reason": why}),
            Publish(force=True),
        ]

    # ------------------------------------------------------------------ the published document
    def snapshot(self, now: float) -> dict[str, Any]:
        """The ``julabo/status`` document (contract in docs/services/julabo.md) at wall-clock time ``now``.
        A measured value or STATUS older than ``stale_after_s`` is null; ``<name>_read_at`` says when each was
        last read. Disconnected, nothing read is shown."""
        live = self.connected
        v = self.values if live else {}
        read_at = self.read_at if live else {}
        limit = self.config.stale_after_s
        active = v.get(Reading.ACTIVE_SETPOINT)
        setpoints: Sequence[Any] = [v.get(r) for r in SETPOINT_READINGS]
        sensor = v.get(Reading.CONTROL_SENSOR)
        status = fresh(self.status, read_at.get(STATUS_KEY), now, limit) if live else None
        measured = {r.value: fresh(v.get(r), read_at.get(r.value), now, limit) for r in MEASURED}
        return {
            "state": self.state.value,
            "connected": live,
            "bath_temp": measured[Reading.BATH_TEMP.value],
            "external_temp": measured[Reading.EXTERNAL_TEMP.value],
            "heating_power": measured[Reading.HEATING_POWER.value],
            "setpoint": setpoints[active] if active is not None else None,
            "setpoint_1": setpoints[0],
            "setpoint_2": setpoints[1],
            "setpoint_3": setpoints[2],
            "active_setpoint": active + 1 if active is not None else None,
            "control_sensor": None if sensor is None else ("external" if sensor else "internal"),
            "pump_stage": v.get(Reading.PUMP_STAGE),
            "status_code": status.code if status else None,
            "status_text": status.text if status else None,
            "remote": status.remote if status and status.remote is not None else None,
            "model": self.version,
            **{f"{r.value}_read_at": read_at.get(r.value) for r in MEASURED},
            "status_read_at": read_at.get(STATUS_KEY),
        }
