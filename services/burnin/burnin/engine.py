"""The burn-in sequencer's engine: state machine, safety gates, step execution, journal (pure, no I/O).

::

    IDLE --start--> RUNNING --(step gate fails)--> HOLDING --continue--> RUNNING --finish--> DONE
    IDLE --restore (after a restart)--> PAUSED --resume--> RUNNING
    RUNNING/HOLDING --pause--> PAUSED --resume--> RUNNING
    RUNNING/HOLDING/PAUSED/FAILED --abort (operator, interlock trip, failed command)--> ABORTING
    ABORTING --safe--> ABORTED          ABORTING --fail (shutdown not confirmed)--> FAILED

Time comes from one place: every call carries ``now`` from the service's clock (scaled in simulation), so
nothing here knows whether time is real. Outputs are collected and taken with :meth:`Engine.drain`:
commands for other services (with ids: feed replies back with :meth:`Engine.on_reply`), journal records
(the adapter writes and fsyncs each one), events and result documents.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from transitions import Machine

from .recipe import Recipe
from .settings import BurninSettings
from .steps import HV_IS_OFF, MIN_REAL_TIMEOUT_S, Progress, PromptRunner, Runner, Verdict, dew_floor, runner_for
from .tracker import Status, Tracker
from .world import Command, Reply, World


class State(StrEnum):
    IDLE = "IDLE"
    RUNNING = "RUNNING"
    HOLDING = "HOLDING"
    PAUSED = "PAUSED"
    ABORTING = "ABORTING"
    DONE = "DONE"
    ABORTED = "ABORTED"
    FAILED = "FAILED"


class Trigger(StrEnum):
    START = "start"
    RESTORE = "restore"
    RESTORE_FAILED = "restore_failed"
    HOLD = "hold"
    CONTINUE = "proceed"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    FINISH = "finish"
    SAFE = "safe"
    FAIL = "fail"


ACTIVE = frozenset({State.RUNNING, State.HOLDING, State.PAUSED, State.ABORTING})
TRANSITIONS = [
    {"trigger": Trigger.START, "source": [State.IDLE, State.DONE, State.ABORTED], "dest": State.RUNNING},
    {"trigger": Trigger.RESTORE, "source": State.IDLE, "dest": State.PAUSED},
    {"trigger": Trigger.RESTORE_FAILED, "source": State.IDLE, "dest": State.FAILED},  # restarted mid-shutdown
    {"trigger": Trigger.HOLD, "source": State.RUNNING, "dest": State.HOLDING},
    {"trigger": Trigger.CONTINUE, "source": State.HOLDING, "dest": State.RUNNING},
    {"trigger": Trigger.PAUSE, "source": [State.RUNNING, State.HOLDING], "dest": State.PAUSED},
    {"trigger": Trigger.RESUME, "source": [State.PAUSED, State.HOLDING], "dest": State.RUNNING},
    {
        "trigger": Trigger.ABORT,
        "source": [State.RUNNING, State.HOLDING, State.PAUSED, State.FAILED],
        "dest": State.ABORTING,
    },
    {"trigger": Trigger.FINISH, "source": State.RUNNING, "dest": State.DONE},
    {"trigger": Trigger.SAFE, "source": State.ABORTING, "dest": State.ABORTED},
    {"trigger": Trigger.FAIL, "source": State.ABORTING, "dest": State.FAILED},
]

ABORT_PHASE_TIMEOUT_S = 900.0
TRIPPED_INTERLOCK = ("TRIPPED", "ACK_PENDING")


class Refused(Exception):
    """An operator command that cannot be carried out now; the message says why."""


@dataclass
class StepRecord:
    index: int
    name: str
    kind: str
    start: float | None = None
    end: float | None = None
    outcome: str | None = None
    detail: str = ""
    tries: int = 0


@dataclass
class Info:
    uid: str
    operator: str
    comment: str = ""
    start_t: float = 0.0


@dataclass
class Outputs:
    commands: list[tuple[str, Command]] = field(default_factory=list)
    journal: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class _Machine:
    state: State  # set by the machine (``initial``), changed only by triggers

    def __init__(self) -> None:
        self.m = Machine(
            model=self,
            states=list(State),
            transitions=[{**t, "trigger": t["trigger"].value} for t in TRANSITIONS],
            initial=State.IDLE,
            auto_transitions=False,
            model_attribute="state",
        )

    def can(self, trigger: Trigger) -> bool:
        return trigger.value in self.m.get_triggers(self.state)


class Engine:
    """One burn-in at a time. Not thread-safe by itself: the adapter calls it under :attr:`lock`."""

    def __init__(self, settings: BurninSettings) -> None:
        self.settings = settings
        self.lock = threading.RLock()
        self.fsm = _Machine()
        self.recipe: Recipe | None = None
        self.info: Info | None = None
        self.index = 0
        self.runner: Runner | None = None
        self.history: list[StepRecord] = []
        self.message = ""
        self.hold_auto = False
        self.world = World()
        self.now = 0.0
        self.abort_reason: str | None = None
        self._abort_phase = 0
        self._abort_since = 0.0
        # replies take real time: the reply timeout (15 s real) is converted to sequencer time
        self.tracker = Tracker(settings.retries, settings.retry_interval_s, 15.0 * settings.time_scale)
        self.out = Outputs()
        self.wake_at = float("inf")  #: engine time a runner asked to be ticked at (see :meth:`next_tick`)
        self._results: dict[str, list[dict[str, Any]]] = {"iv_scan": [], "calibration": []}

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> State:
        return State(self.fsm.state)

    def _fire(self, trigger: Trigger, reason: str = "") -> None:
        before = self.state
        getattr(self.fsm, trigger.value)()
        self._journal("state", state=self.state.value, reason=reason)
        self._event(
            "state_change",
            f"burn-in {before.value} -> {self.state.value}" + (f": {reason}" if reason else ""),
            severity="warning"
            if self.state in (State.HOLDING, State.ABORTING)
            else ("alarm" if self.state in (State.FAILED, State.ABORTED) else "info"),
            **{"from": before.value, "to": self.state.value, "reason": reason},
        )

    def status(self) -> dict[str, Any]:
        """Status document (state, step i/N and name, cycle k/K, elapsed, ETA, last gate message)."""
        r, info = self.recipe, self.info
        step = r.steps[self.index] if r and self.index < len(r.steps) else None
        elapsed = (self.now - info.start_t) if info else None
        in_step = (self.now - self.runner.started) if self.runner and self.runner.started is not None else 0.0
        remaining = max(r.remaining_s(self.index) - in_step, 0.0) if r and step else 0.0
        return {
            "state": self.state.value,
            "uid": info.uid if info else None,
            "recipe": r.name if r else None,
            "operator": info.operator if info else None,
            "step": (self.index + 1) if step else None,
            "steps": len(r.steps) if r else None,
            "step_name": step.name if step else None,
            "step_kind": step.kind.value if step else None,
            "cycle": step.cycle if step else None,
            "cycles": r.cycles if r else None,
            "elapsed_s": round(elapsed, 1) if elapsed is not None else None,
            "eta_s": round(remaining, 1) if self.state in ACTIVE else None,
            "message": self.message,
            "hold_auto": self.hold_auto if self.state == State.HOLDING else None,
            "abort_reason": self.abort_reason,
            "modules": list(r.modules) if r else [],
        }

    # ------------------------------------------------------------------ outputs
    def _journal(self, rec: str, **data: Any) -> None:
        self.out.journal.append({"rec": rec, "t": self.now, **data})

    def _event(self, kind: str, message: str, severity: str = "info", **data: Any) -> None:
        self.out.events.append({"kind": kind, "message": message, "severity": severity, **data})

    def drain(self) -> Outputs:
        """Take everything produced since the last call."""
        self.out.commands.extend(self.tracker.drain())
        out, self.out = self.out, Outputs()
        return out

    # ------------------------------------------------------------------ StepContext for the runners
    @property
    def uid(self) -> str:
        return self.info.uid if self.info else ""

    @property
    def operator(self) -> str:
        return self.info.operator if self.info else ""

    def _owner(self) -> str:
        return f"step{self.index}:{self.history[-1].tries if self.history else 0}"

    def send(self, command: Command) -> None:
        self.tracker.send(self._owner(), command, self.now)

    def sent(self, key: str) -> tuple[str | None, str | None]:
        entry = self.tracker.status(self._owner(), key)
        if entry is None:
            return None, None
        return entry.status.value, (entry.errors[-1] if entry.errors else None)

    def reply_result(self, key: str) -> Mapping[str, Any] | None:
        entry = self.tracker.status(self._owner(), key)
        return entry.reply.result if entry and entry.reply else None

    def wake(self, at: float) -> None:
        self.wake_at = min(self.wake_at, at)

    def next_tick(self) -> float:
        """Engine time of the next timed event (a runner's wait, a retry, a reply timeout); inf when only a
        status message or an operator command can change anything. The adapter ticks at this time at the latest
        and at once on every status message: no fixed polling period adds to a step."""
        return min(self.wake_at, self.tracker.next_due())

    def record(self, kind: str, doc: dict[str, Any]) -> None:
        doc = {**doc, "burnin": self.uid, "t": self.now}
        self._results.setdefault(kind, []).append(doc)
        self.out.records.append((kind, doc))
        self._journal("result", kind=kind, doc=doc)

    @property
    def results(self) -> dict[str, list[dict[str, Any]]]:
        return self._results

    # ------------------------------------------------------------------ operator commands
    def start(self, recipe: Recipe, uid: str, operator: str, comment: str, now: float, world: World) -> None:
        """Begin ``recipe``; refused unless the stand is ready (services fresh, interlock OK)."""
        self.now, self.world = now, world
        if not self.fsm.can(Trigger.START):
            raise Refused(f"a burn-in is {self.state.value} ({self.uid}): abort it or wait for it to end")
        problem = self._service_gate(("caen", "julabo")) or self._interlock_problem()
        if problem:
            raise Refused(f"start refused: {problem}")
        self.recipe, self.info = recipe, Info(uid, operator, comment, now)
        self.index, self.runner, self.history, self.abort_reason = 0, None, [], None
        self._results = {"iv_scan": [], "calibration": []}
        self._journal(
            "start",
            uid=uid,
            operator=operator,
            comment=comment,
            recipe=recipe.name,
            recipe_text=recipe.text,
            modules=list(recipe.modules),
        )
        self._fire(Trigger.START, f"recipe {recipe.name} by {operator}")
        self.tick(now, world)

    def restore(self, recipe: Recipe, info: Info, history: list[StepRecord], index: int, was: str, now: float) -> None:
        """Come back after a restart: PAUSED at the interrupted step; nothing is commanded."""
        self.now = now
        self.recipe, self.info, self.history, self.index = recipe, info, history, index
        self.runner = None
        reason = (
            f"restarted while {was}: paused at step {index + 1}/{len(recipe.steps)} "
            f"({recipe.steps[index].name}); resume to go on"
        )
        if was not in (State.ABORTING, State.FAILED):
            self.fsm.restore()
        else:
            self.fsm.restore_failed()
            reason = f"restarted while {was}: the safe shutdown was not confirmed; abort again to finish it"
        self.message = reason
        self._journal("state", state=self.state.value, reason=reason)
        self._event("restored", reason, severity="warning", step=index + 1)

    def pause(self, now: float, operator: str = "") -> None:
        self.now = now
        if not self.fsm.can(Trigger.PAUSE):
            raise Refused(f"nothing to pause (state {self.state.value})")
        self._interrupt_step(f"paused by {operator or 'operator'}")
        self.message = f"paused by {operator or 'operator'}"
        self._fire(Trigger.PAUSE, self.message)

    def resume(self, now: float, world: World, operator: str = "") -> None:
        self.now, self.world = now, world
        if not self.fsm.can(Trigger.RESUME):
            raise Refused(f"nothing to resume (state {self.state.value})")
        problem = self._interlock_problem()
        if problem:
            raise Refused(f"resume refused: {problem}")
        self._interrupt_step("restarted on resume")
        self.hold_auto = False
        self._fire(Trigger.RESUME, f"resumed by {operator or 'operator'} at step {self.index + 1}")
        self.tick(now, world)

    def abort(self, now: float, reason: str) -> None:
        self.now = now
        if not self.fsm.can(Trigger.ABORT):
            raise Refused(f"nothing to abort (state {self.state.value})")
        self._begin_abort(reason)

    def skip(self, now: float, operator: str) -> None:
        self.now = now
        if self.state not in (State.RUNNING, State.HOLDING, State.PAUSED) or self.recipe is None:
            raise Refused(f"nothing to skip (state {self.state.value})")
        self._interrupt_step(f"skipped by {operator}")
        self._end_step("skipped", f"skipped by {operator}")
        self._event("step_skipped", f"step {self.index} skipped by {operator}", severity="warning", operator=operator)
        if self.state == State.HOLDING:
            self.hold_auto = False
            self._fire(Trigger.CONTINUE, f"step skipped by {operator}")

    def acknowledge(self, now: float, operator: str) -> None:
        self.now = now
        if not isinstance(self.runner, PromptRunner) or self.state != State.RUNNING:
            raise Refused("no operator prompt is waiting")
        self.runner.acknowledged_by = operator
        self.tick(now, self.world)

    def on_reply(self, ident: str, reply: Reply, now: float) -> None:
        self.now = now
        entry = self.tracker.on_reply(ident, reply, now)
        if entry is not None and entry.status == Status.FAILED:
            self._gave_up()

    # ------------------------------------------------------------------ gates
    def _service_gate(self, services: tuple[str, ...]) -> str | None:
        w, stale = self.world, self.settings.stale_s
        for name in services:
            if not w.online.get(name):
                return f"service {name} is not online"
            src = {"caen": w.caen, "julabo": w.julabo, "ph2acf": w.ph2acf}[name]
            if not src.fresh(stale):
                return f"{name} status is {'missing' if src.doc is None else f'stale ({src.age_s:.0f} s old)'}"
        if "caen" in services and self.recipe is not None:
            for m in self.recipe.modules:
                src = w.modules.get(m)
                if src is None or not src.fresh(stale):
                    return f"no fresh status of module {m}"
        return None

    def _interlock_problem(self) -> str | None:
        if not self.settings.require_interlock:
            return None
        il = self.world.interlock
        if not self.world.online.get("interlock", True) or not il.fresh(self.settings.stale_s):
            return "interlock status is missing or stale"
        if il.get("state") != "OK":
            return (
                f"interlock is {il.get('state')} ({', '.join(map(str, il.get('active') or [])) or 'no reason given'})"
            )
        return None

    def _interlock_tripped(self) -> str | None:
        if not self.settings.require_interlock:
            return None
        il = self.world.interlock
        if il.doc is not None and il.get("state") in TRIPPED_INTERLOCK:
            return f"interlock {il.get('state')}: {', '.join(map(str, il.get('active') or [])) or '?'}"
        return None

    # ------------------------------------------------------------------ the loop
    def tick(self, now: float, world: World) -> None:
        """Advance with the newest world; call often (every few hundred ms and on every status message)."""
        self.now, self.world = now, world
        self.wake_at = float("inf")
        self.tracker.tick(now)
        if self.tracker.gave_up:
            self._gave_up()
        state = self.state
        if state in (State.RUNNING, State.HOLDING, State.PAUSED):
            tripped = self._interlock_tripped()
            if tripped:
                self._begin_abort(tripped)
                return
        if state == State.ABORTING:
            self._abort_tick()
            return
        if state not in (State.RUNNING, State.HOLDING) or self.recipe is None:
            return
        if state == State.HOLDING and not self.hold_auto:
            return  # waits for the operator
        self._dew_guard()
        if self.index >= len(self.recipe.steps):
            self._finish()
            return
        step = self.recipe.steps[self.index]
        if self.runner is None:
            self.runner = runner_for(step)
            self.history.append(
                StepRecord(
                    step.index,
                    step.name,
                    step.kind.value,
                    start=now,
                    tries=sum(1 for h in self.history if h.index == step.index) + 1,
                )
            )
            self._journal("step_start", index=step.index, name=step.name)
            self._event(
                "step_start",
                f"step {step.index + 1}/{len(self.recipe.steps)}: {step.name}",
                step=step.index + 1,
                name=step.name,
                step_kind=step.kind.value,
            )
        problem = self._service_gate(self.runner.needs) or self._interlock_problem()
        if problem:
            self._hold(problem, auto=False)
            return
        progress = self.runner.tick(self, now)
        self._apply(progress)

    def _apply(self, progress: Progress) -> None:
        v = progress.verdict
        if v == Verdict.RUNNING:
            self.message = progress.message
            if self.state == State.HOLDING:
                self.hold_auto = False
                self._fire(Trigger.CONTINUE, "condition met")
        elif v == Verdict.DONE:
            self._end_step("done", progress.message)
            if self.state == State.HOLDING:
                self.hold_auto = False
                self._fire(Trigger.CONTINUE, "condition met")
            self.tick(self.now, self.world)  # start the next step at once
        elif v == Verdict.WAIT_AUTO:
            self.message = progress.message
            if self.state != State.HOLDING:
                self.hold_auto = True
                self._fire(Trigger.HOLD, progress.message)
        elif v == Verdict.WAIT_OPERATOR:
            self._hold(progress.message, auto=False)
        elif v == Verdict.ABORT:
            self._begin_abort(progress.message)

    def _hold(self, reason: str, *, auto: bool) -> None:
        self.message = reason
        if not auto:
            self._interrupt_step(reason)
        if self.state == State.RUNNING:
            self.hold_auto = auto
            self._fire(Trigger.HOLD, reason)
        elif self.state == State.HOLDING and self.hold_auto and not auto:
            self.hold_auto = False
            self._journal("state", state=self.state.value, reason=reason)

    def _interrupt_step(self, reason: str) -> None:
        """Stop the current step's actions; it restarts from its beginning when the burn-in goes on."""
        if self.runner is not None:
            self.runner.interrupt(self, reason)
            if self.runner.started is not None and self.history and self.history[-1].end is None:
                self._end_step("interrupted", reason, advance=False)
            self.runner = None

    def _end_step(self, outcome: str, detail: str, advance: bool = True) -> None:
        if self.recipe is None:
            return
        step = self.recipe.steps[self.index]
        if not self.history or self.history[-1].index != step.index or self.history[-1].end is not None:
            self.history.append(StepRecord(step.index, step.name, step.kind.value, start=self.now))
        rec = self.history[-1]
        rec.end, rec.outcome, rec.detail = self.now, outcome, detail
        self.tracker.forget(self._owner())
        self._journal("step_end", index=step.index, outcome=outcome, detail=detail)
        self._event(
            "step_end",
            f"step {step.index + 1} {step.name}: {outcome} ({detail})",
            step=step.index + 1,
            outcome=outcome,
            severity="info" if outcome == "done" else "warning",
        )
        self.runner = None
        if advance:
            self.index += 1
            self.message = ""

    def _finish(self) -> None:
        self._journal("end", outcome="done")
        self.message = "burn-in complete"
        self._fire(Trigger.FINISH, "all steps done")

    def _dew_guard(self) -> None:
        """Raise the chiller setpoint if it is below dew point + margin (the air got wetter)."""
        if self.runner is not None and self.runner.step.kind.value == "temperature":
            return  # the temperature step keeps the same rule itself
        sp = self.world.julabo.get("setpoint")
        floor, _ = dew_floor(self.settings, self.world)
        if isinstance(sp, (int, float)) and floor is not None and sp < floor - 0.05:
            value = min(round(floor + 0.05, 1), self.settings.limits.setpoint_max)
            if (
                self.tracker.status("guard", "dew") is None
                or self.tracker.status("guard", "dew").status != Status.PENDING
            ):
                self.tracker.send(
                    "guard", Command("julabo", "set_setpoint", {"index": 1, "value": value}, key="dew"), self.now
                )
                self._event(
                    "dew_guard",
                    f"chiller setpoint {sp:g} C below dew point + margin: raised to {value:g} C",
                    severity="warning",
                )

    def _gave_up(self) -> None:
        entries, self.tracker.gave_up = self.tracker.gave_up, []
        for e in entries:
            msg = f"{e.command.service} {e.command.name} failed {e.tries} times: {(e.errors or ['?'])[-1]}"
            self._event("command_failed", msg, severity="alarm", owner=e.owner)
            if e.owner == "abort" and self.state == State.ABORTING:
                self._abort_fail(msg)

    # ------------------------------------------------------------------ abort to the safe state
    def _begin_abort(self, reason: str) -> None:
        self._interrupt_step(f"abort: {reason}")
        self.abort_reason = reason
        self.message = f"aborting: {reason}"
        self.hold_auto = False
        self._abort_phase, self._abort_since = 0, self.now
        self._fire(Trigger.ABORT, reason)
        self._abort_tick()

    def _abort_modules(self) -> list[str]:
        return list(self.recipe.modules) if self.recipe else list(self.settings.modules)

    def _abort_tick(self) -> None:
        """HV off, then LV off, then the chiller to the safe temperature; each confirmed by readback."""
        mods, w = self._abort_modules(), self.world
        states = {m: w.module_state(m) for m in mods}
        phase = self._abort_phase
        if phase == 0:
            self.tracker.send("abort", Command("caen", "hv_off", {"modules": mods}, key="hv_off"), self.now)
            self._abort_phase, self._abort_since = 1, self.now
        elif phase == 1:
            if self._confirmed("hv_off") and all(s in HV_IS_OFF | {"TRIPPED"} for s in states.values()):
                self.tracker.send("abort", Command("caen", "lv_off", {"modules": mods}, key="lv_off"), self.now)
                self._abort_phase, self._abort_since = 2, self.now
        elif phase == 2:
            if self._confirmed("lv_off") and all(s in ("OFF", "TRIPPED") for s in states.values()):
                safe = min(
                    max(self.settings.safe_temperature, self.settings.limits.setpoint_min),
                    self.settings.limits.setpoint_max,
                )
                self.tracker.send(
                    "abort", Command("julabo", "set_setpoint", {"index": 1, "value": safe}, key="safe"), self.now
                )
                self._abort_phase, self._abort_since = 3, self.now
        elif phase == 3 and self._confirmed("safe"):
            self._journal("end", outcome="aborted", reason=self.abort_reason)
            self.message = f"aborted: {self.abort_reason}; stand in the safe state"
            self._fire(Trigger.SAFE, self.message)
            return
        limit = max(ABORT_PHASE_TIMEOUT_S, MIN_REAL_TIMEOUT_S * self.settings.time_scale)
        if self.state == State.ABORTING and self.now - self._abort_since > limit:
            self._abort_fail(
                f"safe shutdown phase {self._abort_phase} not confirmed within {ABORT_PHASE_TIMEOUT_S:g} s "
                f"(modules {states})"
            )

    def _confirmed(self, key: str) -> bool:
        entry = self.tracker.status("abort", key)
        return entry is not None and entry.status == Status.OK

    def _abort_fail(self, why: str) -> None:
        self.message = f"safe shutdown FAILED: {why}; operator action needed"
        self._journal("end", outcome="failed", reason=why)
        self._fire(Trigger.FAIL, self.message)

    # ------------------------------------------------------------------ document
    def document(self) -> dict[str, Any]:
        """The burn-in as stored (MongoDB ``burnins``): recipe as run, modules, steps with outcomes, results."""
        r, info = self.recipe, self.info
        return {
            "uid": self.uid,
            "stand": self.settings.stand,
            "recipe": {"name": r.name, "text": r.text, "steps": len(r.steps)} if r else None,
            "modules": list(r.modules) if r else [],
            "operator": info.operator if info else None,
            "comment": info.comment if info else None,
            "state": self.state.value,
            "abort_reason": self.abort_reason,
            "steps": [vars(h).copy() for h in self.history],
            "iv_scans": [
                {"step": d["step"], "modules": {m: x["outcome"] for m, x in d["modules"].items()}}
                for d in self._results.get("iv_scan", [])
            ],
            "calibrations": list(self._results.get("calibration", [])),
        }
