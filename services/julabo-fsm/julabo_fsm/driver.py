"""The I/O thread that owns the link to the chiller: polling, operator commands, reconnects.

One thread does all talking, so the 250 ms pacing rule holds by construction. Operator commands wait in a
queue and go before the next poll query. A status cycle reads only what can change by itself (STATUS, bath
temperature, heating power, external Pt100) plus one of the slow values (setpoints, selections, pump stage)
in rotation; slow values are re-read in full on connect, after any silence, after each command that changes
them and on ``refresh``. At 270 ms pacing a cycle takes 5 commands ≈ 1.35 s.

The decisions (what a communication gap means, whether a stop took, whether a reading is still current) are
in :mod:`julabo_fsm.safety`; this module does the talking.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from trackerdcs.commands import CommandError

from .fsm import ChillerFsm, State, Trigger
from .link import LinkError, SerialLink
from .protocol import (
    SETPOINT_READINGS,
    SETPOINT_SETTINGS,
    ModelMap,
    ProtocolError,
    Reading,
    Setting,
    StatusCategory,
    StatusReport,
    encode,
    parse_reading,
    parse_status,
    parse_version,
)
from .safety import Outage, OutagePhase, RunWatch, Verdict, fresh, judge_gap, stop_verdict

log = logging.getLogger(__name__)

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


class Silence(Exception):
    """The chiller did not answer a query in time."""


class Listener(Protocol):
    def snapshot(self, payload: dict[str, Any], force: bool) -> None: ...

    def event(self, kind: str, message: str, severity: str, **data: Any) -> None: ...


@dataclass
class DriverConfig:
    """Timing and behaviour of the I/O thread (the ``julabo:`` config section)."""

    pacing_s: float = 0.27  # measured margin over the device's 250 ms (docs/services/julabo.md)
    poll_interval_s: float = 1.0
    max_missed: int = 3
    garbled_for_error: int = 3
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    probe_attempts: int = 3
    restore_after_power_failure: bool = True
    command_timeout_s: float = 10.0
    stale_after_s: float = 5.0  # a reading older than this is published as null
    unsafe_attempts: int = 3  # tries for commands whose failure is unsafe (stop, restoring after a power cut)


class ChillerDriver:
    """Talks to one chiller through ``link`` and reports to ``listener``."""

    def __init__(self, link: SerialLink, model: ModelMap, config: DriverConfig, listener: Listener) -> None:
        self.link = link
        self.model = model
        self.config = config
        self.listener = listener
        self.fsm = ChillerFsm(self._state_changed)
        self.values: dict[Reading, Any] = {}
        self.read_at: dict[str, float] = {}  # wall-clock time each value (and STATUS) was last read
        self.outage = Outage()
        self.status: StatusReport | None = None
        self.version: str | None = None
        self.last_error: str | None = None
        self.counters = {"queries": 0, "silent": 0, "garbled": 0, "reconnects": 0, "cycles": 0}
        self.last_cycle_s: float | None = None
        self._actions: queue.Queue[tuple[concurrent.futures.Future[Any], Callable[[], Any]]] = queue.Queue()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reconnect_now = threading.Event()
        self._thread: threading.Thread | None = None
        self._missed = 0
        self._garbled_streak = 0
        self._slow_index = 0
        self._sweep_pending = True
        self.run = RunWatch()
        self._ever_connected = False
        self._failures = 0
        self._connect_attempts = 0

    # ------------------------------------------------------------------ public (any thread)
    @property
    def state(self) -> State:
        return State(self.fsm.state)

    @property
    def connected(self) -> bool:
        return self.fsm.connected

    @property
    def connect_attempts(self) -> int:
        """Connection attempts so far (successful or not)."""
        return self._connect_attempts

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="julabo-io", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.link.close()

    def call(self, action: Callable[[], Any], *, needs_link: bool = True) -> Any:
        """Run ``action`` on the I/O thread before the next poll query; its result, or its CommandError."""
        if needs_link and not self.connected:
            raise CommandError(self._not_connected())
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._actions.put((future, action))
        self._wake.set()
        try:
            return future.result(timeout=self.config.command_timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise CommandError(
                f"chiller did not complete the command within {self.config.command_timeout_s} s"
            ) from None

    def request_reconnect(self) -> dict[str, Any]:
        """Drop the link and connect again now (on the I/O thread); wait for the outcome."""
        attempts = self._connect_attempts
        self._failures = 0
        self._reconnect_now.set()
        self._wake.set()
        deadline = time.monotonic() + self.config.command_timeout_s
        while self._connect_attempts == attempts and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.02)
        return {
            "connected": self.connected,
            "state": self.state.value,
            "error": None if self.connected else self.last_error,
        }

    # ------------------------------------------------------------------ snapshot
    def snapshot(self) -> dict[str, Any]:
        """The ``julabo/status`` document (contract in docs/services/julabo.md). A measured value or STATUS
        older than ``stale_after_s`` is null; ``<name>_read_at`` says when each was last read."""
        live = self.connected
        v = self.values if live else {}
        read_at = self.read_at if live else {}
        now, limit = time.time(), self.config.stale_after_s
        active = v.get(Reading.ACTIVE_SETPOINT)
        setpoints = [v.get(r) for r in SETPOINT_READINGS]
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

    def note_commanded(self, running: bool) -> None:
        """The DCS itself started (True) or stopped (False) the chiller; a stop it asked for is no surprise."""
        self.run.commanded(running)
        self.outage.own_change(Reading.RUNNING, running)

    def refresh_all(self) -> dict[str, Any]:
        """Read every value now (I/O thread) and return the snapshot."""
        self._sweep_pending = True
        self._cycle()
        return self.snapshot()

    def publish(self, force: bool = False) -> None:
        """Hand the current snapshot to the listener."""
        self._publish(force)

    def not_connected_message(self) -> str:
        return self._not_connected()

    def _publish(self, force: bool = False) -> None:
        try:
            self.listener.snapshot(self.snapshot(), force)
        except Exception:
            log.exception("publishing the status failed")

    def _event(self, kind: str, message: str, severity: str = "info", **data: Any) -> None:
        try:
            self.listener.event(kind, message, severity, **data)
        except Exception:
            log.exception("publishing event %s failed", kind)

    # ------------------------------------------------------------------ I/O thread
    def _run(self) -> None:
        self._publish(force=True)
        next_cycle = 0.0
        while not self._stop.is_set():
            if self._reconnect_now.is_set() and self.link.is_open:
                self._reconnect_now.clear()
                self._lose("reconnect requested by the operator", requested=True)
            if not self.link.is_open:
                self._reconnect_now.clear()
                if not self._connect():
                    delay = min(
                        self.config.reconnect_max_s, self.config.reconnect_min_s * 2 ** max(0, self._failures - 1)
                    )
                    self._flush_actions()
                    self._wake.clear()
                    if not self._stop.is_set() and not self._reconnect_now.is_set():
                        self._wake.wait(delay)
                    self._flush_actions()
                    continue
                next_cycle = 0.0
            try:
                self._run_actions()
                now = time.monotonic()
                if now >= next_cycle:
                    next_cycle = now + self.config.poll_interval_s
                    self._cycle()
                else:
                    self._wait_action(next_cycle - now)
            except LinkError as exc:
                self._lose(str(exc))
            except Exception as exc:  # a bug must not stop the polling for good
                log.exception("unexpected error in the I/O loop")
                self._lose(f"internal error: {exc!r}")
        self._flush_actions()

    def _wait_action(self, timeout: float) -> None:
        self._wake.clear()
        if self._actions.empty() and not self._stop.is_set() and not self._reconnect_now.is_set():
            self._wake.wait(timeout)

    def _run_actions(self) -> None:
        """Commands go first: run everything queued (LinkError propagates after failing the command)."""
        while True:
            try:
                future, action = self._actions.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(action())
            except LinkError as exc:
                future.set_exception(CommandError(f"connection to the chiller lost during the command: {exc}"))
                raise
            except CommandError as exc:
                future.set_exception(exc)
            except Exception as exc:  # a bug must not kill the I/O thread
                log.exception("command action failed")
                future.set_exception(exc)
            if self._reconnect_now.is_set():
                return

    def _flush_actions(self) -> None:
        """While disconnected, queued commands fail at once (reconnect requests just complete)."""
        while True:
            try:
                future, _ = self._actions.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                future.set_exception(CommandError(self._not_connected()))

    def _not_connected(self) -> str:
        return (
            f"chiller not connected (state {self.state.value}"
            + (f": {self.last_error}" if self.last_error else "")
            + "); the service keeps retrying, 'reconnect' retries now"
        )

    # ------------------------------------------------------------------ connection
    def _connect(self) -> bool:
        try:
            return self._open_and_probe()
        except Exception as exc:  # never let a surprise kill the I/O thread
            log.exception("unexpected error while connecting")
            self.link.close()
            self.last_error = repr(exc)
            self._failures += 1
            return False
        finally:
            self._connect_attempts += 1

    def _open_and_probe(self) -> bool:
        try:
            self.link.open()
            version = None
            for _ in range(self.config.probe_attempts):  # the first query after opening may be lost
                raw = self.link.transact(encode("VERSION"), True)
                try:
                    version = parse_version(raw or b"")
                    break
                except ProtocolError:
                    continue
            if version is None:
                raise LinkError(f"no answer to VERSION from {self.link.url}")
        except LinkError as exc:
            self.link.close()
            self._failures += 1
            if self._failures == 1 or self.last_error != str(exc):
                log.warning("cannot connect to the chiller: %s", exc)
            self.last_error = str(exc)
            return False
        log.info("connected to %s at %s", version, self.link.url)
        self.version = version
        self._failures = 0
        self._missed = 0
        self._garbled_streak = 0
        self._sweep_pending = True
        if self._ever_connected:
            self.counters["reconnects"] += 1
            self.outage.begin(self.values, self.run.was_running, link_lost=True)
            self._event("reconnected", f"chiller link back on {self.link.url}", "info", model=version)
        # After a reconnect nothing cached is trusted: every value is unknown until read again.
        self.values.clear()
        self.read_at.clear()
        self._ever_connected = True
        self.last_error = None
        self._try(self.read_status)  # the state is known as soon as the link is
        return True

    def _lose(self, reason: str, *, requested: bool = False) -> None:
        """Close the link; ``requested`` when the operator asked for it (an action, not an alarm)."""
        self.link.close()
        self.last_error = reason
        self.outage.begin(self.values, self.run.was_running, link_lost=True)
        if self.fsm.fire(Trigger.LINK_LOST):
            if requested:
                message = "chiller link closed: reconnect requested by the operator; connecting again now"
            else:
                message = f"chiller link lost: {reason}"
            severity = "info" if requested else "alarm"
            self._event("disconnected", message, severity, reason=reason, requested=requested)
            self._publish(force=True)

    def _mark_gap(self) -> None:
        self.outage.begin(self.values, self.run.was_running)

    # ------------------------------------------------------------------ queries
    def _ask(self, command: str) -> bytes:
        """One query; raises Silence (counted, link dropped after ``max_missed``) or returns the raw reply."""
        self.counters["queries"] += 1
        raw = self.link.transact(encode(command), True)
        if not raw:
            self.counters["silent"] += 1
            self._missed += 1
            self._mark_gap()
            if self._missed >= self.config.max_missed:
                raise LinkError(f"no reply to {self._missed} commands in a row")
            raise Silence(command)
        if self._missed:
            self._sweep_pending = True  # something may have happened while it was silent
        self._missed = 0
        return raw

    def _garbled(self, command: str, exc: ProtocolError) -> None:
        self.counters["garbled"] += 1
        self._garbled_streak += 1
        log.debug("%s: %s", command, exc)
        if self._garbled_streak >= self.config.garbled_for_error and self.fsm.fire(Trigger.SAW_ERROR):
            self._event("error", f"chiller replies are unintelligible ({exc})", "alarm")

    def read(self, reading: Reading) -> Any:
        """Query one value and remember it. Raises Silence or ProtocolError."""
        command = self.model.read_command(reading)
        raw = self._ask(command)
        try:
            value = parse_reading(reading, raw)
        except ProtocolError as exc:
            self._garbled(command, exc)
            raise
        self._garbled_streak = 0
        self.values[reading] = value
        self.read_at[reading.value] = time.time()
        return value

    def read_status(self) -> StatusReport:
        """Query STATUS and let the state machine see it. Raises Silence or ProtocolError."""
        raw = self._ask("STATUS")
        try:
            report = parse_status(raw)
        except ProtocolError as exc:
            self._garbled("STATUS", exc)
            raise
        self._garbled_streak = 0
        if report.category is not StatusCategory.COMMAND_ERROR:
            self.read_at[STATUS_KEY] = time.time()
        self._apply_status(report)
        return report

    def _apply_status(self, report: StatusReport) -> None:
        if report.category is StatusCategory.COMMAND_ERROR:
            log.warning("chiller reports a refused command: %s %s", report.code, report.text)
            return
        previous = self.status
        self.status = report
        if report.category is StatusCategory.ALARM:
            if previous is None or previous.code != report.code:
                self._event(
                    "alarm",
                    f"chiller alarm {report.code}: {report.text}",
                    "alarm",
                    status_code=report.code,
                    status_text=report.text,
                )
            self.run.alarm()
        elif previous is not None and previous.category is StatusCategory.ALARM:
            self._event(
                "alarm_cleared",
                f"chiller alarm cleared; now {report.text}",
                "info",
                status_code=report.code,
                status_text=report.text,
            )
        in_gap = self.outage.phase is not OutagePhase.NONE
        if report.running is not None and self.run.observe(report.running, in_gap=in_gap):
            self._event(
                "stopped_externally",
                "the chiller stopped without a stop command from the DCS (front panel?)",
                "warning",
                status_code=report.code,
                status_text=report.text,
            )
        self.fsm.observe(report)

    def _state_changed(self, old: State, new: State) -> None:
        self._event(
            "state_change", f"chiller {old.value} -> {new.value}", "info", **{"from": old.value, "to": new.value}
        )
        self._publish(force=True)  # the status follows the link at once (values not yet read are null)

    def _try(self, fn: Callable[[], Any]) -> bool:
        try:
            fn()
            return True
        except (Silence, ProtocolError):
            return False

    # ------------------------------------------------------------------ polling
    def _slow_items(self) -> list[Reading]:
        readable = [r for r in SLOW_READINGS if self.model.can_read(r)]
        if self._sweep_pending:
            return readable
        item = readable[self._slow_index % len(readable)]
        self._slow_index += 1
        return [item]

    def _cycle(self) -> None:
        """One status cycle; publishes the snapshot at its end."""
        started = time.monotonic()
        sweep = self._sweep_pending
        ok = self._try(self.read_status)
        for reading in FAST_READINGS:
            if self._stop.is_set():
                return
            self._run_actions()
            if self.model.can_read(reading):
                ok &= self._try(lambda r=reading: self.read(r))
        for reading in self._slow_items():
            if self._stop.is_set():
                return
            self._run_actions()
            ok &= self._try(lambda r=reading: self.read(r))
        if sweep and ok:
            self._sweep_pending = False
            if self.outage.open:
                self._after_gap()
        self.counters["cycles"] += 1
        self.last_cycle_s = time.monotonic() - started
        self._publish()

    def _after_gap(self) -> None:
        """After silence or a reconnect, with every value read again: did the chiller lose power meanwhile?
        It comes back stopped with power-on values. The service never starts it again; it may put the lost
        values back (each verified by read-back, retried). One gap gives at most one ``power_failure``."""
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
            return
        restored: dict[str, Any] = {}
        failed: dict[str, str] = {}
        for setting, reading, want in verdict.restore:
            if self.values.get(reading) == want:
                continue
            try:
                self.write_verified(setting, want, reading, attempts=self.config.unsafe_attempts)
                restored[reading.value] = want
            except CommandError as exc:
                log.warning("could not restore %s: %s", reading.value, exc)
                failed[reading.value] = str(exc)
        self.outage.close()
        lost = {r.value: v for r, v in verdict.lost.items()}
        message = "chiller lost power: it is STOPPED and will not be restarted by the DCS; the operator decides"
        if lost:
            message += f"; values lost: {sorted(lost)}"
        if restored:
            message += f"; re-sent: {sorted(restored)}"
        if failed:
            message += f"; NOT restored: {sorted(failed)}"
        self._event(
            "power_failure",
            message,
            "alarm",
            was_running=verdict.was_running,
            lost=lost,
            restored=restored,
            not_restored=failed,
        )
        self._publish(force=True)

    # ------------------------------------------------------------------ writing (I/O thread only)
    def send(self, setting: Setting, value: float | int) -> None:
        """An OUT_* command (the chiller never answers those)."""
        self.counters["queries"] += 1
        self.link.transact(encode(self.model.write_command(setting), value), False)

    def confirm_status(self, what: str) -> StatusReport:
        """STATUS right after an OUT_* command: a refusal shows up here."""
        for _ in range(2):
            try:
                report = self.read_status()
            except (Silence, ProtocolError):
                continue
            if report.category is StatusCategory.COMMAND_ERROR:
                raise CommandError(f"the chiller refused {what}: {report.code:03d} {report.text}")
            return report
        raise CommandError(f"no readable STATUS from the chiller after {what}")

    def readback(self, reading: Reading) -> Any:
        for _ in range(2):
            try:
                return self.read(reading)
            except (Silence, ProtocolError):
                continue
        raise CommandError(f"could not read back {reading.value} from the chiller")

    def write_verified(
        self, setting: Setting, value: float | int, reading: Reading | None, *, attempts: int = 1
    ) -> Any:
        """OUT_*, then the read-back (or STATUS when there is none); on a mismatch STATUS tells why. Up to
        ``attempts`` tries (a lost line is sent again). Returns the value the chiller holds."""
        for attempt in range(1, max(1, attempts) + 1):
            try:
                return self._write_once(setting, value, reading)
            except CommandError as exc:
                if attempt >= attempts:
                    raise
                log.warning("%s=%s not confirmed (attempt %d of %d): %s", setting.value, value, attempt, attempts, exc)
        raise AssertionError("unreachable")

    def _write_once(self, setting: Setting, value: float | int, reading: Reading | None) -> Any:
        what = f"{setting.value}={value}"
        self.send(setting, value)
        if reading is None or not self.model.can_read(reading):
            self.confirm_status(what)
            return None
        got = self.readback(reading)
        if got is None or abs(float(got) - float(value)) > 0.011:
            self.confirm_status(what)  # raises with the chiller's reason (e.g. -11 VALUE TOO LARGE)
            raise CommandError(f"the chiller did not take {what}: it reads back {got}")
        self.outage.own_change(reading, got)  # our own change is not a value lost to a power cut
        return got

    def stop_verified(self) -> StatusReport:
        """OUT_MODE_05 0, then STATUS and IN_MODE_05 must both say stopped; sent again up to
        ``unsafe_attempts`` times. A stop that still fails is an alarm event, and a CommandError."""
        self.note_commanded(False)
        attempts = max(1, self.config.unsafe_attempts)
        why = "no readable STATUS"
        for attempt in range(1, attempts + 1):
            self.send(Setting.RUNNING, 0)
            report, refusal = self._operating_status()
            mode = self._quiet_read(Reading.RUNNING)
            verdict = stop_verdict(report, mode)
            if verdict is Verdict.DONE and report is not None:
                return report
            why = f"STATUS {report.code:02d} {report.text}" if report is not None else "no readable STATUS"
            if mode is not None:
                why += f", IN_MODE_05 reads {mode}"
            if refusal is not None:
                why += f" (the chiller refused the stop: {refusal.code:03d} {refusal.text})"
            log.warning("stop not confirmed (attempt %d of %d): %s", attempt, attempts, why)
        message = f"the chiller did not stop after {attempts} attempts: {why}; it may still be RUNNING"
        self._event("stop_failed", message, "alarm", attempts=attempts, reason=why)
        self.publish(force=True)
        raise CommandError(message)

    def _operating_status(self) -> tuple[StatusReport | None, StatusReport | None]:
        """STATUS after an OUT_* command: (the operating state or None, a command refusal seen first or None)."""
        refusal = None
        for _ in range(3):
            try:
                report = self.read_status()
            except (Silence, ProtocolError):
                continue
            if report.category is StatusCategory.COMMAND_ERROR:
                refusal = report
                continue
            return report, refusal
        return None, refusal

    def _quiet_read(self, reading: Reading) -> Any:
        """A read-back that may fail (None), for models that have the command."""
        if not self.model.can_read(reading):
            return None
        try:
            return self.read(reading)
        except (Silence, ProtocolError):
            return None

    def require_remote(self) -> None:
        if self.status is not None and self.status.remote is False:
            raise CommandError(
                f"chiller is in manual mode ({self.status.code:02d} {self.status.text}): it ignores remote "
                "commands; switch it to remote control on its front panel"
            )


SETPOINT_SETTING = dict(zip((1, 2, 3), SETPOINT_SETTINGS, strict=True))
SETPOINT_READING = dict(zip((1, 2, 3), SETPOINT_READINGS, strict=True))
