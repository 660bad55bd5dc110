"""The I/O thread that owns the link to the chiller: polling, operator commands, reconnects.

One thread does all talking, so the 250 ms pacing rule holds by construction. Operator commands wait in a
queue and go before the next poll query. A status cycle reads only what can change by itself (STATUS, bath
temperature, heating power, external Pt100) plus one of the slow values (setpoints, selections, pump stage)
in rotation; slow values are re-read in full on connect, after any silence, after each command that changes
them and on ``refresh``. At 270 ms pacing a cycle takes 5 commands ≈ 1.35 s.

The decisions (what a reply, a silence or a gap means, what to read next, whether a stop took, what to put
back after a power cut, whether a reading is still current) are in :class:`julabo_fsm.chiller_core.ChillerCore`
and :mod:`julabo_fsm.safety`; this module does the talking and carries out what the core decides.
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

from .chiller_core import FAST_READINGS, ChillerCore, Notice, Output, start_took, stop_failure_reason, took
from .fsm import State
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
from .safety import Verdict, stop_verdict

log = logging.getLogger(__name__)


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
        self.core = ChillerCore(model, config)
        self.last_cycle_s: float | None = None
        self._actions: queue.Queue[tuple[concurrent.futures.Future[Any], Callable[[], Any]]] = queue.Queue()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reconnect_now = threading.Event()
        self._thread: threading.Thread | None = None
        self._connect_attempts = 0

    # ------------------------------------------------------------------ public (any thread)
    # What the core knows, read by the app's commands and the health document.
    @property
    def state(self) -> State:
        return self.core.state

    @property
    def connected(self) -> bool:
        return self.core.connected

    @property
    def values(self) -> dict[Reading, Any]:
        return self.core.values

    @property
    def status(self) -> StatusReport | None:
        return self.core.status

    @property
    def last_error(self) -> str | None:
        return self.core.last_error

    @property
    def counters(self) -> dict[str, int]:
        return self.core.counters

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
            raise CommandError(self.core.not_connected_message())
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
        self.core.retry_now()
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
        """The ``julabo/status`` document now (see :meth:`ChillerCore.snapshot`)."""
        return self.core.snapshot(time.time())

    def note_commanded(self, running: bool) -> None:
        """The DCS itself started (True) or stopped (False) the chiller; a stop it asked for is no surprise."""
        self.core.commanded(running)

    def refresh_all(self) -> dict[str, Any]:
        """Read every value now (I/O thread) and return the snapshot."""
        self.core.sweep()
        self._cycle()
        return self.snapshot()

    def publish(self, force: bool = False) -> None:
        """Hand the current snapshot to the listener."""
        self._publish(force)

    def not_connected_message(self) -> str:
        return self.core.not_connected_message()

    def _publish(self, force: bool = False) -> None:
        try:
            self.listener.snapshot(self.snapshot(), force)
        except Exception:
            log.exception("publishing the status failed")

    def _emit(self, outputs: list[Output]) -> None:
        """Carry out what the core decided to tell: events and status publications, in order."""
        for item in outputs:
            if isinstance(item, Notice):
                try:
                    self.listener.event(item.kind, item.message, item.severity, **item.data)
                except Exception:
                    log.exception("publishing event %s failed", item.kind)
            else:
                self._publish(item.force)

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
                    delay = self.core.backoff_s()
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
                future.set_exception(CommandError(self.core.not_connected_message()))

    # ------------------------------------------------------------------ connection
    def _connect(self) -> bool:
        try:
            return self._open_and_probe()
        except Exception as exc:  # never let a surprise kill the I/O thread
            log.exception("unexpected error while connecting")
            self.link.close()
            self.core.connect_failed(repr(exc))
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
            if self.core.connect_failed(str(exc)):
                log.warning("cannot connect to the chiller: %s", exc)
            return False
        log.info("connected to %s at %s", version, self.link.url)
        self._emit(self.core.link_up(version, self.link.url))
        self._try(self.read_status)  # the state is known as soon as the link is
        return True

    def _lose(self, reason: str, *, requested: bool = False) -> None:
        """Close the link; ``requested`` when the operator asked for it (an action, not an alarm)."""
        self.link.close()
        self._emit(self.core.link_lost(reason, requested=requested))

    # ------------------------------------------------------------------ queries
    def _ask(self, command: str) -> bytes:
        """One query; raises Silence (counted, link dropped after ``max_missed``) or returns the raw reply."""
        self.core.asked()
        raw = self.link.transact(encode(command), True)
        if not raw:
            drop = self.core.silence()
            if drop is not None:
                raise LinkError(drop)
            raise Silence(command)
        self.core.replied()
        return raw

    def _garbled(self, command: str, exc: ProtocolError) -> None:
        log.debug("%s: %s", command, exc)
        self._emit(self.core.garbled(str(exc)))

    def read(self, reading: Reading) -> Any:
        """Query one value and remember it. Raises Silence or ProtocolError."""
        command = self.model.read_command(reading)
        raw = self._ask(command)
        try:
            value = parse_reading(reading, raw)
        except ProtocolError as exc:
            self._garbled(command, exc)
            raise
        self.core.reading(reading, value, time.time())
        return value

    def read_status(self) -> StatusReport:
        """Query STATUS and let the state machine see it. Raises Silence or ProtocolError."""
        raw = self._ask("STATUS")
        try:
            report = parse_status(raw)
        except ProtocolError as exc:
            self._garbled("STATUS", exc)
            raise
        if report.category is StatusCategory.COMMAND_ERROR:
            log.warning("chiller reports a refused command: %s %s", report.code, report.text)
        self._emit(self.core.status_line(report, time.time()))
        return report

    def _try(self, fn: Callable[[], Any]) -> bool:
        try:
            fn()
            return True
        except (Silence, ProtocolError):
            return False

    # ------------------------------------------------------------------ polling
    def _cycle(self) -> None:
        """One status cycle; publishes the snapshot at its end."""
        started = time.monotonic()
        sweep = self.core.sweep_pending
        ok = self._try(self.read_status)
        for reading in FAST_READINGS:
            if self._stop.is_set():
                return
            self._run_actions()
            if self.model.can_read(reading):
                ok &= self._try(lambda r=reading: self.read(r))
        for reading in self.core.slow_items():
            if self._stop.is_set():
                return
            self._run_actions()
            ok &= self._try(lambda r=reading: self.read(r))
        if self.core.cycle_done(sweep, ok):
            self._after_gap()
        self.last_cycle_s = time.monotonic() - started
        self._publish()

    def _after_gap(self) -> None:
        """After silence or a reconnect, with every value read again: the core judges whether the chiller lost
        power meanwhile. The service never starts it again; it may put the lost values back (each verified by
        read-back, retried). One gap gives at most one ``power_failure``."""
        verdict = self.core.judge_gap()
        if not verdict.power_failure:
            return
        restored: dict[str, Any] = {}
        failed: dict[str, str] = {}
        for setting, reading, want in self.core.to_restore(verdict):
            try:
                self.write_verified(setting, want, reading, attempts=self.config.unsafe_attempts)
                restored[reading.value] = want
            except CommandError as exc:
                log.warning("could not restore %s: %s", reading.value, exc)
                failed[reading.value] = str(exc)
        self._emit(self.core.power_failure(verdict, restored, failed))

    # ------------------------------------------------------------------ writing (I/O thread only)
    def send(self, setting: Setting, value: float | int) -> None:
        """An OUT_* command (the chiller never answers those)."""
        self.core.asked()
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
        if not took(value, got):
            self.confirm_status(what)  # raises with the chiller's reason (e.g. -11 VALUE TOO LARGE)
            raise CommandError(f"the chiller did not take {what}: it reads back {got}")
        self.core.own_change(reading, got)  # our own change is not a value lost to a power cut
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
            why = stop_failure_reason(report, mode, refusal)
            log.warning("stop not confirmed (attempt %d of %d): %s", attempt, attempts, why)
        message, outputs = self.core.stop_failed(attempts, why)
        self._emit(outputs)
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
        """Refuse (CommandError) when the chiller is in manual mode."""
        refusal = self.core.remote_refusal()
        if refusal is not None:
            raise CommandError(refusal)

    def require_startable(self) -> None:
        """Refuse (CommandError) a start in manual mode or in alarm."""
        refusal = self.core.start_refusal()
        if refusal is not None:
            raise CommandError(refusal)

    def start_verified(self) -> StatusReport:
        """OUT_MODE_05 1, then STATUS must say running (else CommandError)."""
        self.send(Setting.RUNNING, 1)
        report = self.confirm_status("start")
        refusal = start_took(report)
        if refusal is not None:
            raise CommandError(refusal)
        self.note_commanded(True)
        return report


SETPOINT_SETTING = dict(zip((1, 2, 3), SETPOINT_SETTINGS, strict=True))
SETPOINT_READING = dict(zip((1, 2, 3), SETPOINT_READINGS, strict=True))
