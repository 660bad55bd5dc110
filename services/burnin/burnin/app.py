"""The burn-in service: MQTT commands and retained status of the other services in, engine ticks, commands to
caen/julabo/ph2acf out, journal on disk, documents to the store.

Status ``<root>/status``: the engine's status document (state, uid, recipe, step/steps, step_name, cycle/cycles,
elapsed_s, eta_s, message, hold_auto, abort_reason, modules) plus ``time_scale``. Events on ``<root>/event``:
``state_change``, ``step_start``, ``step_end``, ``step_skipped``, ``restored``, ``command_failed``,
``dew_guard``, ``iv_scan``, ``burnin_start``/``burnin_end`` (start and end markers for Grafana).
For the operator UI (retained): ``<root>/status/steps`` (every step with its outcome) and
``<root>/status/iv/<module>`` (the module's newest IV scan with its points), see :mod:`burnin.overview`.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackerdcs import __version__, latencytrace
from trackerdcs.commands import Arg, CommandError
from trackerdcs.completion import Completion
from trackerdcs.config import MqttSettings
from trackerdcs.runconditions import conditions_file
from trackerdcs.service import Service, dumps

from .engine import Engine, Outputs, Refused, State
from .journal import Journal, replay
from .overview import newest_curves, step_overview
from .recipe import RecipeError, load_recipe
from .settings import BurninSettings
from .store import BurninStore, mongo_factory
from .world import Reply, Source, World

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

TICK_S = 0.2  #: longest real time between two engine ticks (timeouts); timed steps wake at their own time
REPLAY_S = 30.0  #: how often spooled documents are offered to MongoDB again
COMMAND_DEADLINE_S = 15.0  #: a command's ``deadline``: sent + this (real s); the services refuse it later
MAX_RECIPE_BYTES = 1024 * 1024


class Clock:
    """The one clock of the sequencer: monotonic seconds, optionally faster than real time (simulation)."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self._t0 = time.monotonic()
        self._epoch = time.time()  # so that journaled times stay comparable across restarts

    def now(self) -> float:
        return self._epoch + (time.monotonic() - self._t0) * self.scale

    def ago(self, wall_s: float, now: float | None = None) -> float:
        """Clock time ``wall_s`` real seconds before ``now`` (default: now)."""
        return (self.now() if now is None else now) - wall_s * self.scale

    def real_s(self, until: float) -> float:
        """Real seconds from now until clock time ``until`` (0 if past)."""
        return max((until - self.now()) / self.scale, 0.0)


class BurninApp:
    """One burn-in sequencer per stand."""

    def __init__(self, settings: BurninSettings, mqtt_settings: MqttSettings, *, store: BurninStore | None = None):
        self.settings = settings
        self.clock = Clock(settings.time_scale)
        self.svc = Service("burnin", mqtt_settings, root=settings.root, version=__version__)
        self.engine = Engine(settings)
        self.journal = Journal(settings.state_dir)
        factory = mongo_factory(settings.mongo_uri) if settings.mongo_uri else None
        self.store = store or BurninStore(settings.archive_dir, settings.spool_dir, factory, settings.mongo_database)
        self._latest: dict[str, tuple[dict[str, Any] | None, float, float]] = {}
        self._online: dict[str, bool] = {}
        self._pending: dict[str, str] = {}  # command id -> service root (the loop thread's)
        self._replies: collections.deque[tuple[str, dict[str, Any], float]] = collections.deque()  #: from MQTT
        self._curves: set[str] = set()  # modules whose IV curve this process has published
        self._conditions_meta: dict[str, Any] | None = None  # the ended burn-in's conditions file
        self._conditions_thread: threading.Thread | None = None
        self._curves_lock = threading.Lock()
        self._lock = self.engine.lock
        self._stop = threading.Event()
        self._published_at = 0.0
        self._woken_at: float | None = None
        self._tick_ms: collections.deque[float] = collections.deque(maxlen=2000)  #: a tick and its outputs
        self._wake_ms: collections.deque[float] = collections.deque(maxlen=2000)  #: message -> tick, real ms
        self._wake = threading.Event()  #: set by every status message and reply: the loop ticks at once
        self._thread: threading.Thread | None = None
        r = settings.roots
        self._roots = {"caen": r.caen, "julabo": r.julabo, "ph2acf": r.ph2acf, "interlock": r.interlock}
        self._subscriptions = [
            # the system and module documents only: the channel documents (twice as many, changing with every
            # reading) would only load the MQTT thread; a module document carries what the sequencer needs
            f"{r.caen}/status",
            f"{r.caen}/status/module/+",
            f"{r.julabo}/status",
            f"{r.ph2acf}/status",
            f"{r.env}/+",
            f"{r.interlock}/status",
            *(f"{root}/availability" for root in self._roots.values()),
            *(f"{root}/reply" for root in (r.caen, r.julabo, r.ph2acf)),
        ]
        for pattern in self._subscriptions:
            self.svc.subscribe(pattern, self._on_message)
        self._register()
        if not settings.require_interlock:
            log.warning("require_interlock is false: the sequencer does NOT check the interlock (stand without one)")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        latencytrace.mark(f"clock {time.time():.6f}")  # lines the marks up with the documents' wall-clock ts
        self._restore()
        self._publish_curves(self.engine.results.get("iv_scan") or [])
        self.publish(steps=True)
        self.svc.start()
        self._thread = threading.Thread(target=self._loop, name="burnin-loop", daemon=True)
        self._thread.start()
        # the archive may hold years of scans: read it aside, the service is online meanwhile
        threading.Thread(target=self._publish_archived_curves, name="burnin-iv-archive", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        self.journal.close()
        self.svc.stop()

    def _restore(self) -> None:
        back = replay(self.journal.read())
        if back is None:
            return
        if back.ended is not None:
            self.journal.finish(back.info.uid)
            return
        try:
            recipe = load_recipe(back.recipe_text, self.settings, back.modules)
        except RecipeError as exc:
            log.error("journaled burn-in %s no longer validates (%s): left for the operator", back.info.uid, exc)
            return
        for rec in back.results:
            self.engine.results.setdefault(rec.get("kind", "?"), []).append(rec.get("doc") or {})
        with self._lock:
            self.engine.restore(
                recipe, back.info, back.history, min(back.index, len(recipe.steps) - 1), back.state, self.clock.now()
            )
            self._handle(self.engine.drain())

    # ------------------------------------------------------------------ inputs
    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        self.svc.health.messages_in.tick()
        topic = msg.topic
        t_in = time.perf_counter()
        if topic.endswith("/availability"):
            self._online[topic.rsplit("/", 1)[0]] = bytes(msg.payload) == b"online"
            return
        try:
            doc = json.loads(msg.payload) if msg.payload else None
        except (ValueError, UnicodeDecodeError):
            return
        if doc is not None and not isinstance(doc, dict):
            return
        if latencytrace.enabled():
            latencytrace.mark(f"in {topic} {(doc or {}).get('ts')} {t_in:.6f}")
        if topic.endswith("/reply"):
            # handed to the loop thread: this (the MQTT) thread never waits for the engine's lock, which a tick
            # holds, so that the status documents behind a reply are not held up
            self._replies.append((str((doc or {}).get("id")), doc or {}, self.clock.now()))
            self._wake_now()
            return
        self._latest[topic] = (doc, time.time(), self.clock.now())
        self._wake_now()

    def _wake_now(self) -> None:
        if not self._wake.is_set():
            self._woken_at = time.monotonic()
            self._wake.set()

    def world(self) -> World:
        """The World as received, ages from the documents' own ``ts`` on the wall clock."""
        wall, now = time.time(), self.clock.now()
        r = self.settings.roots

        def src(topic: str) -> Source:
            doc, received, at = self._latest.get(topic, (None, 0.0, float("-inf")))
            if doc is None:
                return Source()
            ts = doc.get("ts")
            age = max(wall - ts if isinstance(ts, (int, float)) else wall - received, 0.0)
            # when the reading was taken, on the engine clock: never after its arrival
            stamped = min(at, self.clock.ago(age, now)) if isinstance(ts, (int, float)) else None
            return Source(doc, age, at, stamped)

        modules: dict[str, Source] = {}
        env: dict[str, Source] = {}
        for topic in list(self._latest):
            if topic.startswith(f"{r.caen}/status/module/"):
                modules[topic.rsplit("/", 1)[1]] = src(topic)
            elif topic.startswith(f"{r.env}/"):
                env[topic.split("/", 1)[1]] = src(topic)
        return World(
            online={name: self._online.get(root, False) for name, root in self._roots.items()},
            caen=src(f"{r.caen}/status"),
            modules=modules,
            julabo=src(f"{r.julabo}/status"),
            ph2acf=src(f"{r.ph2acf}/status"),
            interlock=src(f"{r.interlock}/status"),
            env=env,
        )

    # ------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        """Tick the engine on every status message or reply, at the engine's next timed event, and at least
        every ``TICK_S`` real seconds. Times come from the one clock, so a time scale needs nothing here."""
        next_replay = time.monotonic() + REPLAY_S
        while not self._stop.is_set():
            with self._lock:
                timeout = min(TICK_S, self.clock.real_s(self.engine.next_tick()))
            self._wake.wait(timeout)
            self._wake.clear()
            latencytrace.mark("wake")
            woken, self._woken_at = self._woken_at, None
            if woken is not None:
                self._wake_ms.append((time.monotonic() - woken) * 1000)
            if self._stop.is_set():
                break
            if time.monotonic() >= next_replay:
                next_replay = time.monotonic() + REPLAY_S
                self._replay_spool()
            try:
                with self._lock:
                    t0 = time.monotonic()
                    self._take_replies()
                    self.engine.tick(self.clock.now(), self.world())
                    self._handle(self.engine.drain())
                    self._tick_ms.append((time.monotonic() - t0) * 1000)
            except Exception:  # a bug must not stop the loop silently: keep going, say so
                log.exception("burn-in loop error")
                self.svc.health.error("burn-in loop error (see log)")

    def _take_replies(self) -> None:
        """Replies received since the last tick, to the engine (with the engine's lock held)."""
        while self._replies:
            ident, doc, at = self._replies.popleft()
            if self._pending.pop(ident, None) is not None:
                self.engine.on_reply(ident, Reply(bool(doc.get("ok")), doc.get("error"), doc.get("result")), at)

    def _handle(self, out: Outputs) -> None:
        """Journal first (fsync), then commands, events, documents and status."""
        ended = None
        for rec in out.journal:
            self.journal.append({**rec, "ts": time.time()})
            if rec["rec"] == "end":
                ended = rec
        for ident, cmd in out.commands:
            root = self._roots[cmd.service]
            self._pending[ident] = root
            deadline = time.time() + COMMAND_DEADLINE_S
            body = {**cmd.args, "id": ident, "deadline": deadline, "by": "burnin", "from": "burnin sequencer"}
            self.svc.publish(f"{root}/cmd/{cmd.name}", dumps(body))
            if latencytrace.enabled():
                latencytrace.mark(f"out {root}/cmd/{cmd.name} {ident}")
        for ev in out.events:
            data = {k: v for k, v in ev.items() if k not in ("kind", "message", "severity")}
            self.svc.event(ev["kind"], ev["message"], severity=ev["severity"], uid=self.engine.uid, **data)
        for kind, doc in out.records:
            if kind == "iv_scan":
                bath = self.world().julabo.get("bath_temp")
                doc = {**doc, "ts": time.time(), "stand": self.settings.stand, "bath_temp": bath}
                n = len(self.engine.results.get("iv_scan", []))
                where = self.store.save_iv_scan(
                    f"{self.engine.uid}/{doc['step']}/{n}",
                    doc,
                    Path(self.engine.uid) / "iv" / f"{doc['step']:04d}-{n}.json",
                )
                self._publish_curves([doc])
                outcomes = {m: r["outcome"] for m, r in doc["modules"].items()}
                self.svc.event(
                    "iv_scan",
                    f"IV scan step {doc['step'] + 1}: " + ", ".join(f"{m} {o}" for m, o in outcomes.items()),
                    uid=self.engine.uid,
                    step=doc["step"] + 1,
                    outcomes=outcomes,
                    stored=where,
                )
        if out.journal and self.engine.info is not None:
            self._save_document()
        if ended is not None and self.engine.state in (State.DONE, State.ABORTED, State.FAILED):
            self.svc.event(
                "burnin_end",
                f"burn-in {self.engine.uid} {ended.get('outcome')}",
                uid=self.engine.uid,
                outcome=ended.get("outcome"),
                stop_ts=time.time(),
            )
            self._save_conditions()
            if self.engine.state != State.FAILED:
                self.journal.finish(self.engine.uid)
        # the loop ticks on every status message: the status goes out when something happened, else at most
        # every TICK_S (elapsed and ETA move with every tick)
        if out.journal or out.events or time.monotonic() - self._published_at >= TICK_S:
            self.publish(steps=bool(out.journal))

    def _replay_spool(self) -> None:
        """Upload documents that waited for MongoDB (outside the engine lock: it may take a while)."""
        if self.store.spooled():
            uploaded = self.store.replay()
            if uploaded:
                self.svc.event(
                    "spool",
                    f"uploaded {uploaded} spooled document(s) to MongoDB; {self.store.spooled()} left",
                    uploaded=uploaded,
                )

    def _save_document(self) -> None:
        doc = {**self.engine.document(), "ts": time.time(), "conditions": self._conditions()}
        if self._conditions_meta is not None:
            doc["conditions_file"] = self._conditions_meta
        self.store.save("burnins", self.engine.uid, doc, Path(self.engine.uid) / "burnin.json")

    def _save_conditions(self) -> None:
        """The burn-in's time series (its modules, chiller, environment, interlock, events) into its archive
        as ``conditions.parquet`` and GridFS (trackerdcs.runconditions); the document records where. Runs in a
        thread of its own (days of points take seconds to export): the sequencer's loop goes on meanwhile; the
        thread rewrites the burn-in's final document with ``conditions_file`` when done."""
        info = self.engine.info
        if info is None:
            return
        stop = time.time()
        start = stop - max(0.0, self.engine.now - info.start_t) / max(self.settings.time_scale, 1e-9)
        uid = self.engine.uid
        final = {**self.engine.document(), "ts": stop, "conditions": self._conditions()}

        def export() -> None:
            try:
                found = conditions_file(final.get("modules") or [], start, stop)
                meta = dict(found.meta)
                if found.data is not None:
                    path = Path(uid) / "conditions.parquet"
                    meta.update(path=str(path), stored=self.store.save_file(path, found.data))
                if self.engine.uid == uid:
                    self._conditions_meta = meta
                self.store.save("burnins", uid, {**final, "conditions_file": meta}, Path(uid) / "burnin.json")
            except Exception:  # never lose the sequencer to an archive problem
                log.exception("conditions file of burn-in %s not written", uid)

        thread = threading.Thread(target=export, name=f"conditions-{uid}", daemon=True)
        self._conditions_thread = thread
        thread.start()

    def _conditions(self) -> dict[str, Any]:
        w = self.world()
        return {
            "julabo": dict(w.julabo.doc) if w.julabo.doc else None,
            "env": {k: dict(v.doc) for k, v in w.env.items() if v.doc},
            "interlock": dict(w.interlock.doc) if w.interlock.doc else None,
        }

    def latency(self) -> dict[str, Any]:
        """How fast the loop reacts (real ms, the last 2000): from a status message or reply to the tick that
        sees it, and a tick with its outputs (journal, commands, events, documents)."""

        def pct(values: list[float], q: float) -> float | None:
            return round(sorted(values)[min(len(values) - 1, int(q * len(values)))], 2) if values else None

        wake, tick = list(self._wake_ms), list(self._tick_ms)
        return {
            "wake_ms_p50": pct(wake, 0.5), "wake_ms_p95": pct(wake, 0.95), "wake_ms_max": pct(wake, 1.0),
            "tick_ms_p50": pct(tick, 0.5), "tick_ms_p95": pct(tick, 0.95), "tick_ms_max": pct(tick, 1.0),
        }  # fmt: skip

    def status(self) -> dict[str, Any]:
        return {**self.engine.status(), "time_scale": self.settings.time_scale, "spooled": self.store.spooled()}

    def publish(self, steps: bool = False) -> None:
        """``<root>/status``; with ``steps`` also ``<root>/status/steps`` (after a step started or ended or the
        state changed: whenever something was journaled). No steps document while no burn-in was loaded, so the
        retained one of the last burn-in stays."""
        self._published_at = time.monotonic()
        self.svc.publish_status(self.status())
        e = self.engine
        if steps and e.recipe is not None:
            overview = step_overview(e.recipe, e.history, e.index, e.state.value, e.uid)
            self.svc.publish_status(overview, "steps")

    def _publish_curves(self, scans: list[dict[str, Any]], *, only_new: bool = False) -> None:
        """``<root>/status/iv/<module>``: the newest curve of each module in ``scans`` (oldest first); with
        ``only_new`` only for modules without a curve from this process yet (an archived scan never replaces
        one taken since the start)."""
        for module, curve in newest_curves(scans, self.engine.uid or None).items():
            with self._curves_lock:
                if only_new and module in self._curves:
                    continue
                self._curves.add(module)
                self.svc.publish_status(curve, f"iv/{module}")

    def _publish_archived_curves(self) -> None:
        """At start: the newest archived IV scan of every configured module that has no curve yet (the broker
        keeps them retained; this restores them after the broker lost its store)."""
        try:
            for module in self.settings.modules:
                with self._curves_lock:
                    if module in self._curves:
                        continue
                for found in self.store.iv_scans(module, 1):
                    point_set = {k: v for k, v in found.items() if k not in ("burnin", "step", "ts")}
                    self._publish_curves([{**found, "modules": {module: point_set}}], only_new=True)
        except Exception:  # a damaged archive must not take the service down: say so
            log.exception("reading the newest IV scans from the archive failed")
            self.svc.health.error("IV curves from the archive failed (see log)")

    # ------------------------------------------------------------------ commands
    def _register(self) -> None:
        svc = self.svc
        svc.add_command(
            "start",
            self._cmd_start,
            [
                Arg("recipe", str),
                Arg("modules", list, required=False, item_kind=str),
                Arg("operator", str),
                Arg("comment", str, required=False, default=""),
            ],
            help="start a burn-in from a recipe in the recipes folder",
            completion=Completion(
                done=(State.DONE.value,),
                failed=(State.ABORTED.value, State.FAILED.value),
                match={"uid": "uid"},
                timeout_s=None,  # hours to days: follow it, or give --timeout
                show=("step", "steps", "step_name", "message"),
                description="the burn-in started ended DONE",
            ),
        )
        op = Arg("operator", str, required=False, default="operator")
        svc.add_command("pause", lambda a: self._op(lambda now: self.engine.pause(now, a["operator"])), [op])
        svc.add_command(
            "resume", lambda a: self._op(lambda now: self.engine.resume(now, self.world(), a["operator"])), [op]
        )
        svc.add_command(
            "abort",
            lambda a: self._op(lambda now: self.engine.abort(now, f"operator {a['operator']}: {a['reason']}")),
            [op, Arg("reason", str, required=False, default="operator request")],
        )
        svc.add_command("skip", lambda a: self._op(lambda now: self.engine.skip(now, a["operator"])), [op])
        svc.add_command("ack", lambda a: self._op(lambda now: self.engine.acknowledge(now, a["operator"])), [op])
        svc.add_command(
            "plan", self._cmd_plan, [Arg("recipe", str), Arg("modules", list, required=False, item_kind=str)]
        )
        svc.add_command(
            "status",
            lambda a: {
                **self.status(),
                "history": [vars(h) for h in self.engine.history[-50:]],
                "loop_latency": self.latency(),
            },
        )
        svc.add_command(
            "recipes", lambda a: {"recipes": sorted(p.stem for p in self.settings.recipes_dir.glob("*.yml"))}
        )
        svc.add_command(
            "iv",
            lambda a: {"scans": self.store.iv_scans(a["module"], a["limit"])},
            [Arg("module", str), Arg("limit", int, required=False, default=1, minimum=1, maximum=50)],
        )

    def _op(self, action) -> dict[str, Any]:
        with self._lock:
            try:
                action(self.clock.now())
            except Refused as exc:
                raise CommandError(str(exc)) from None
            self._handle(self.engine.drain())
            return self.engine.status()

    def _recipe_text(self, name: str) -> str:
        if not name or any(c in name for c in "/\\\0") or name.startswith("."):
            raise CommandError("recipe must be the name of a file in the recipes folder (no path)")
        path = self.settings.recipes_dir / (name if name.endswith(".yml") else f"{name}.yml")
        try:
            if path.stat().st_size > MAX_RECIPE_BYTES:
                raise CommandError(f"recipe {name} is larger than {MAX_RECIPE_BYTES} bytes")
            return path.read_text(encoding="utf-8")
        except OSError:
            raise CommandError(f"no recipe {name!r} in {self.settings.recipes_dir}") from None

    def _load(self, args: dict[str, Any]):
        try:
            return load_recipe(self._recipe_text(args["recipe"]), self.settings, args.get("modules") or None)
        except RecipeError as exc:
            raise CommandError(str(exc)) from None

    def _cmd_plan(self, args: dict[str, Any]) -> dict[str, Any]:
        recipe = self._load(args)
        return {
            "recipe": recipe.name,
            "steps": len(recipe.steps),
            "estimate_s": round(recipe.estimate_s),
            "plan": recipe.plan_lines(),
        }

    def _cmd_start(self, args: dict[str, Any]) -> dict[str, Any]:
        operator = args["operator"].strip()
        if not operator:
            raise CommandError("operator must not be empty")
        recipe = self._load(args)
        uid = f"{self.settings.stand}-burnin-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
        with self._lock:
            if self.engine.state in (State.RUNNING, State.HOLDING, State.PAUSED, State.ABORTING, State.FAILED):
                raise CommandError(f"a burn-in is {self.engine.state.value} ({self.engine.uid}): abort it first")
            self.journal.begin()
            self._conditions_meta = None
            try:
                self.engine.start(recipe, uid, operator, args.get("comment") or "", self.clock.now(), self.world())
            except Refused as exc:
                self.engine.drain()
                raise CommandError(str(exc)) from None
            self.svc.event(
                "burnin_start",
                f"burn-in {uid} ({recipe.name}) started by {operator}",
                uid=uid,
                recipe=recipe.name,
                modules=list(recipe.modules),
                start_ts=time.time(),
            )
            self._handle(self.engine.drain())
        return {"uid": uid, "steps": len(recipe.steps), "estimate_s": round(recipe.estimate_s)}
