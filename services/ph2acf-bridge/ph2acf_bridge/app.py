"""The ph2acf bridge: MQTT commands -> Ph2_ACF runs -> summary -> run document (archive, MongoDB, spool).

Status ``<root>/status``: ``{"state", "run", "uid", "calibration", "progress", "operator", "mode", "spooled",
"mongo_ok", "last_uid", "last_run", "last_outcome", "ts"}`` (``last_*``: the latest run that ended, for clients
that wait for a run's outcome). Events on ``<root>/event``: ``run_start`` and ``run_stop`` (carrying the same
``start_ts``/``stop_ts`` as the stored run document, so InfluxDB annotations and MongoDB documents line up),
``error`` and ``spool``.

The decisions (may a run start, what its end amounts to, its number in TCP mode, its events) are in
:mod:`ph2acf_bridge.runplan`, the stored document in :mod:`ph2acf_bridge.document`; this module does the I/O.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackerdcs import __version__
from trackerdcs.commands import Arg, CommandError
from trackerdcs.completion import Completion
from trackerdcs.config import MqttSettings
from trackerdcs.runconditions import conditions_file
from trackerdcs.service import Service

from .conditions import ConditionsCache
from .document import ResultFile, Stand, run_document
from .fsm import RunMachine, RunState, Trigger
from .logparse import LogEvent, Progress, RunStarted
from .runner import RunEnd, Runner, RunnerError
from .runner_subprocess import SubprocessRunner, read_run_number
from .runner_tcp import TcpRunner
from .runplan import (
    Announcement,
    RunContext,
    after_storing,
    error_event,
    next_run_number,
    run_outcome,
    run_start_event,
    run_stop_event,
    run_uid,
    start_refusal,
)
from .settings import BridgeSettings
from .store import MongoStore, RunStore
from .summary import SummaryError, summarise

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 5 * 1024 * 1024


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _malloc_trim()


def release_memory() -> None:
    """After a run: collect its documents (the conditions of every channel, twice, and the summary) and give the
    freed heap back to the system, so that the bridge's memory shows what it keeps, not the last run's peak."""
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def build_store(settings: BridgeSettings) -> RunStore:
    """The run store the settings describe (archive only when no MongoDB URI is configured)."""
    mongo = None
    if settings.mongo.uri:
        mongo = MongoStore.from_uri(
            settings.mongo.uri,
            settings.mongo.database,
            timeout_ms=settings.mongo.timeout_ms,
            gridfs_threshold=settings.mongo.gridfs_threshold_bytes,
        )
    return RunStore(settings.archive_dir, settings.spool_dir, mongo)


class Bridge:
    """The service: one instance per Ph2_ACF installation."""

    def __init__(
        self,
        settings: BridgeSettings,
        mqtt_settings: MqttSettings,
        *,
        store: RunStore | None = None,
    ) -> None:
        self.settings = settings
        self.svc = Service("ph2acf", mqtt_settings, root=settings.root, version=__version__)
        self.store = store or build_store(settings)
        self.conditions = ConditionsCache(settings.caen_root, settings.julabo_root, settings.env_root)
        self.machine = RunMachine()
        self.ctx: RunContext | None = None
        self.last: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._run_thread: threading.Thread | None = None
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self._register_commands()
        for topic in self.conditions.topics:
            self.svc.subscribe(topic, self._on_condition)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Connect to MQTT, publish the initial status, start the spool replay loop."""
        self.svc.health.extra.update(self._health_extra())
        self.svc.start()
        self.publish(force=True)
        thread = threading.Thread(target=self._replay_loop, name="ph2acf-replay", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Abort a run in progress (it is still stored), then disconnect."""
        self._stop.set()
        if self.machine.active:
            log.warning("shutting down during a run: aborting it")
            with contextlib.suppress(CommandError):
                self._abort("bridge shutdown")
            runner = self.ctx.runner if self.ctx else None
            if runner is not None and hasattr(runner, "detach"):
                runner.detach()  # TCP: do not wait for the scan; it is recorded as left running on the server
        if self._run_thread is not None:
            self._run_thread.join(timeout)
        for thread in self._threads:
            thread.join(timeout=5)
        self.svc.stop()

    def wait_idle(self, timeout: float) -> bool:
        """Block until no run is active (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.machine.active:
                return True
            time.sleep(0.02)
        return False

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        ctx = self.ctx
        return {
            "state": RunState(self.machine.state).value,
            "run": ctx.run if ctx else None,
            "uid": ctx.uid if ctx else None,
            "calibration": ctx.calibration if ctx else None,
            "progress": round(ctx.progress, 2) if ctx else 0.0,
            "operator": ctx.operator if ctx else None,
            "mode": self.settings.mode,
            "spooled": len(self.store.spooled()),
            "mongo_ok": self.store.mongo_ok,
            "last_uid": self.last["uid"] if self.last else None,
            "last_run": self.last["run"] if self.last else None,
            "last_outcome": self.last["outcome"] if self.last else None,
            "last_error": self.last["error"] if self.last else None,
        }

    def publish(self, force: bool = False) -> None:
        self.svc.publish_status(self.status(), force=force)

    def _health_extra(self) -> dict[str, Any]:
        return {
            "mongo": self.store.mongo.description if self.store.mongo else None,
            "archive_dir": str(self.store.archive.folder),
            "spooled": len(self.store.spooled()),
        }

    # ------------------------------------------------------------------ conditions
    def _on_condition(self, msg: mqtt.MQTTMessage) -> None:
        self.svc.health.messages_in.tick()
        self.conditions.update(msg.topic, bytes(msg.payload))

    # ------------------------------------------------------------------ commands
    def _register_commands(self) -> None:
        svc = self.svc
        svc.add_command(
            "start",
            self._cmd_start,
            [
                Arg("calibration", str, choices=self.settings.calibrations, help="the calibration to run"),
                Arg("config_file", str, required=False, help="Ph2_ACF XML (default: the calibration's own)"),
                Arg("modules", list, required=False, item_kind=str, help="modules under test (for the record)"),
                Arg("operator", str, help="who runs it"),
                Arg("comment", str, required=False, default="", help="kept with the run"),
            ],
            help="start a calibration run",
            completion=Completion(
                done=("done",),
                failed=("failed", "aborted"),
                field="last_outcome",
                match={"last_uid": "uid"},
                timeout_s=self.settings.max_run_s + 120.0,
                show=("state", "run", "progress", "last_run"),
                description="the run started ended and was stored, outcome done",
            ),
        )
        svc.add_command(
            "abort",
            lambda args: self._abort("operator request"),
            help="stop the run in progress",
            completion=Completion(
                done=(RunState.IDLE.value, RunState.ERROR.value),
                timeout_s=120.0,
                show=("run",),
                description="no run in progress any more (the aborted run stored)",
            ),
        )
        svc.add_command(
            "status",
            lambda args: {**self.status(), "last": self.last, "server_blocked": self._server_blocked()},
            help="current state",
        )
        svc.add_command(
            "server_stopped",
            self._cmd_server_stopped,
            [Arg("operator", str)],
            help="confirm that the scan left running on the Ph2_ACF server has been stopped (TCP mode)",
        )
        svc.add_command(
            "runs",
            lambda args: {"runs": self.store.runs(args["limit"])},
            [Arg("limit", int, required=False, default=20, minimum=1, maximum=500)],
            help="stored runs, newest first",
        )
        svc.add_command("show", self._cmd_show, [Arg("run", int, minimum=0)], help="one stored run document")

    # ------------------------------------------------------------------ a scan left running on the server (TCP)
    @property
    def _blocked_file(self) -> Path:
        return self.settings.state_dir / "tcp_server_busy.json"

    def _server_blocked(self) -> dict[str, Any] | None:
        """The abandoned run still running on the Ph2_ACF server, if any (kept across bridge restarts)."""
        try:
            return json.loads(self._blocked_file.read_text())
        except (OSError, ValueError):
            return None

    def _cmd_server_stopped(self, args: dict[str, Any]) -> dict[str, Any]:
        blocked = self._server_blocked()
        if blocked is None:
            raise CommandError("no scan is recorded as left running on the Ph2_ACF server")
        operator = args["operator"].strip()
        if not operator:
            raise CommandError("operator must not be empty")
        self._blocked_file.unlink(missing_ok=True)
        log.warning("operator %s confirms run %s was stopped on the Ph2_ACF server", operator, blocked.get("run"))
        self.svc.event("server_stopped", f"{operator} confirms run {blocked.get('run')} was stopped on the Ph2_ACF "
                       "server", run=blocked.get("run"), operator=operator)  # fmt: skip
        return {"cleared": blocked}

    def _resolve_config(self, name: str | None) -> Path:
        text = name or self.settings.config_file
        if any(ord(c) < 32 for c in text):
            raise CommandError("config_file must not contain control characters (NUL, newline, ...)")
        raw = Path(text)
        path = (raw if raw.is_absolute() else self.settings.workdir / raw).resolve()
        allowed = self.settings.allowed_config_dirs
        if not any(path.is_relative_to(d) for d in allowed):
            raise CommandError(
                f"config_file {str(raw)!r} is outside the allowed folders ({', '.join(str(d) for d in allowed)})"
            )
        if not path.is_file():
            raise CommandError(f"config_file {str(raw)!r} does not exist in {path.parent}")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise CommandError(f"config_file {str(raw)!r} is larger than {MAX_CONFIG_BYTES} bytes")
        return path

    def _cmd_start(self, args: dict[str, Any]) -> dict[str, Any]:
        operator = args["operator"].strip()
        with self.machine.lock:
            state = RunState(self.machine.state)
            refusal = start_refusal(
                operator=operator,
                state=state,
                current=self.ctx,
                blocked=self._server_blocked() if self.settings.mode == "tcp" else None,
                refuse_when_tripped=self.settings.refuse_when_interlock_tripped,
                interlock=self.conditions.interlock_state(),
            )
            if refusal is not None:
                raise CommandError(refusal)
            config = self._resolve_config(args.get("config_file"))
            try:
                xml = config.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise CommandError(f"cannot read config_file {config}: {exc.strerror}") from None
            ctx = RunContext(
                uid=run_uid(self.settings.stand, time.strftime("%Y%m%dT%H%M%S", time.gmtime()), uuid.uuid4().hex),
                calibration=args["calibration"],
                config_file=config,
                config_xml=xml,
                modules=list(args.get("modules") or []),
                operator=operator,
                comment=args.get("comment") or "",
                conditions_start=self.conditions.snapshot(),
            )
            ctx.runner = self._make_runner()
            self.ctx = ctx
            self.machine.fire(Trigger.START)
        self.publish()
        self._run_thread = threading.Thread(target=self._execute, args=(ctx,), name="ph2acf-run", daemon=True)
        self._run_thread.start()
        return {"uid": ctx.uid, "calibration": ctx.calibration, "state": RunState.STARTING.value}

    def _make_runner(self) -> Runner:
        if self.settings.mode == "tcp":
            return TcpRunner(self.settings, self._next_tcp_run)
        return SubprocessRunner(self.settings)

    def _next_tcp_run(self) -> int:
        """Run numbers for TCP mode: persistent counter, never below the archive's or Ph2_ACF's own."""
        counter = self.settings.state_dir / "next_run.txt"
        try:
            stored: str | None = counter.read_text()
        except OSError:
            stored = None
        run, text = next_run_number(
            stored, read_run_number(self.settings.workdir, self.settings.flavour), self.store.archive.max_run()
        )
        counter.write_text(text)
        return run

    def _abort(self, reason: str) -> dict[str, Any]:
        with self.machine.lock:
            ctx = self.ctx
            state = RunState(self.machine.state)
            if state == RunState.ABORTING:
                raise CommandError(f"run {ctx.run if ctx else '?'} is already being aborted")
            if ctx is None or not self.machine.fire(Trigger.ABORT):
                raise CommandError(f"no run to abort (state {state.value})")
            ctx.extra["abort_reason"] = reason
        log.warning("aborting run %s: %s", ctx.run, reason)
        assert ctx.runner is not None
        ctx.runner.abort()
        self.publish()
        return {"run": ctx.run, "state": RunState.ABORTING.value}

    def _cmd_show(self, args: dict[str, Any]) -> dict[str, Any]:
        doc = self.store.show(args["run"])
        if doc is None:
            raise CommandError(f"run {args['run']} not found")
        return {"run": doc}

    # ------------------------------------------------------------------ the run
    def _on_log_event(self, ctx: RunContext, event: LogEvent) -> None:
        if isinstance(event, Progress):
            ctx.progress = event.percent
            self.publish()
        elif isinstance(event, RunStarted) and event.run != ctx.run:
            log.info("Ph2_ACF reports run %d (expected %s)", event.run, ctx.run)
            ctx.run = event.run
            self.publish()

    def _execute(self, ctx: RunContext) -> None:
        try:
            self._execute_run(ctx)
        except Exception as exc:  # never leave the bridge stuck in an active state
            log.exception("run %s: bridge error", ctx.run)
            self.svc.event("error", f"bridge error during run {ctx.run}: {exc}", severity="alarm", run=ctx.run)
            self.machine.fire(Trigger.FAIL)
            self.publish()
        finally:
            release_memory()

    def _execute_run(self, ctx: RunContext) -> None:
        assert ctx.runner is not None
        ctx.start_ts = time.time()
        end: RunEnd
        try:
            ctx.run = ctx.runner.launch(ctx.calibration, ctx.config_file)
        except RunnerError as exc:
            end = RunEnd(error=str(exc), run=ctx.run)
        else:
            self.machine.fire(Trigger.LAUNCHED)
            ctx.started_event_sent = True
            self._announce(run_start_event(ctx))
            self.publish()
            timer = threading.Timer(self.settings.max_run_s, self._timeout, args=(ctx,))
            timer.daemon = True
            timer.start()
            try:
                end = ctx.runner.follow(lambda event: self._on_log_event(ctx, event))
            finally:
                timer.cancel()
        stop_ts = time.time()
        if end.run is not None:
            ctx.run = end.run
        if end.left_running:
            self._blocked_file.write_text(json.dumps({"run": ctx.run, "uid": ctx.uid, "since": stop_ts}))
        outcome, error = run_outcome(end, ctx.timed_out)
        if outcome == "done":
            ctx.progress = 100.0
        self.machine.fire(Trigger.ENDED)
        self.publish()
        self._announce(run_stop_event(ctx, outcome, stop_ts))
        self._announce(error_event(ctx, error))
        result, channels = self._read_result(end)
        doc = run_document(
            ctx,
            end,
            outcome=outcome,
            error=error,
            stop_ts=stop_ts,
            stand=Stand(self.settings.stand, self.settings.flavour, self.settings.mode, __version__),
            result=result,
            conditions_end=self.conditions.snapshot(),
        )
        conditions = conditions_file(ctx.modules, ctx.start_ts or stop_ts, stop_ts)
        doc["conditions_file"] = conditions.meta
        where = self.store.save(doc, end.result_file, channels, conditions.data)
        if where == "spooled":
            self.svc.event(
                "spool",
                f"MongoDB unavailable: run {ctx.run} kept in the spool ({len(self.store.spooled())} waiting)",
                severity="warning",
                run=ctx.run,
                uid=ctx.uid,
            )
        self.last = {"run": ctx.run, "uid": ctx.uid, "outcome": outcome, "stored": where, "error": error}
        self.svc.health.extra.update(self._health_extra())
        self.machine.fire(after_storing(outcome))
        self.ctx = None
        self.publish()

    def _timeout(self, ctx: RunContext) -> None:
        ctx.timed_out = True
        with contextlib.suppress(CommandError):
            self._abort(f"max_run_s={self.settings.max_run_s} exceeded")

    def _announce(self, announcement: Announcement | None) -> None:
        if announcement is not None:
            self.svc.event(announcement.kind, announcement.message, severity=announcement.severity, **announcement.data)

    @staticmethod
    def _read_result(end: RunEnd) -> tuple[ResultFile, Any]:
        """The result file's size and summary (and the per-channel data for GridFS), if there is one."""
        if end.result_file is None or not end.result_file.exists():
            return ResultFile(), None
        info = {"name": end.result_file.name, "path": str(end.result_file), "bytes": end.result_file.stat().st_size}
        try:
            run_summary = summarise(end.result_file)
        except SummaryError as exc:
            return ResultFile(info, None, str(exc)), None
        return ResultFile(info, run_summary.document()), run_summary.channels

    # ------------------------------------------------------------------ spool replay
    def _replay_loop(self) -> None:
        self.replay_once()  # learn mongo_ok (and upload leftovers) right after start
        while not self._stop.wait(self.settings.replay_interval_s):
            self.replay_once()

    def replay_once(self) -> int:
        """Upload spooled runs if MongoDB is back (also refreshes ``mongo_ok``). Returns runs uploaded."""
        if self.store.mongo is None:
            return 0
        before = self.store.mongo_ok
        uploaded = 0
        if self.store.spooled():
            uploaded, error = self.store.replay()
            if uploaded:
                self.svc.event(
                    "spool",
                    f"uploaded {uploaded} spooled run(s) to MongoDB; {len(self.store.spooled())} left",
                    uploaded=uploaded,
                    remaining=len(self.store.spooled()),
                )
            if error:
                log.info("spool replay: %s", error)
        else:
            self.store.mongo.ping()
        if uploaded or before != self.store.mongo_ok:
            self.svc.health.extra.update(self._health_extra())
            self.publish()
        return uploaded
