"""What each kind of step does, tick by tick (pure: a :class:`StepContext` in, a :class:`Progress` out)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from .iv import IvScan
from .recipe import ChillerAction, PowerAction, Step, StepKind
from .settings import BurninSettings
from .world import Command, World, dew_point

LV_IS_ON = frozenset({"LV_ON", "HV_ON", "HV_RAMP_UP", "HV_RAMP_DOWN"})
HV_IS_OFF = frozenset({"OFF", "LV_ON", "LV_RAMP_UP", "LV_RAMP_DOWN"})
TARGET_STATES = {
    PowerAction.LV_ON: LV_IS_ON,
    PowerAction.HV_ON: frozenset({"HV_ON"}),
    PowerAction.HV_OFF: frozenset({"LV_ON", "OFF"}),
    PowerAction.LV_OFF: frozenset({"OFF"}),
}
SETPOINT_INDEX = 1
#: A step that waits for a device answers at the earliest after this much REAL time: commands and status
#: messages travel in real time, so under a simulation's time scale K a step timeout is at least K times this
#: (the same rule as the reply timeout). At scale 1 it is below every step timeout and changes nothing.
MIN_REAL_TIMEOUT_S = 30.0
IV_HV_OFF_TIMEOUT_S = 120.0  #: after an IV scan, wait this long for HV off before the next step (it checks again)


class Verdict(StrEnum):
    RUNNING = "running"  #: going on
    DONE = "done"  #: finished
    WAIT_AUTO = "wait_auto"  #: waiting for temperature or humidity: HOLDING, goes on by itself
    WAIT_OPERATOR = "wait_operator"  #: HOLDING until the operator resumes (the step restarts then)
    ABORT = "abort"  #: unsafe or unrecoverable: abort the burn-in to the safe state


@dataclass
class Progress:
    verdict: Verdict = Verdict.RUNNING
    message: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


class StepContext(Protocol):
    """What a running step may see and do."""

    settings: BurninSettings
    world: World
    uid: str
    operator: str

    def send(self, command: Command) -> None: ...

    def sent(self, key: str) -> tuple[str | None, str | None]:
        """(status "pending"/"ok"/"failed" or None if never sent, last error) of this step's command ``key``."""
        ...

    def reply_result(self, key: str) -> Mapping[str, Any] | None: ...

    def wake(self, at: float) -> None:
        """Tick again at engine time ``at`` at the latest (a timed condition: a wait, a settle, stable-for),
        whether or not a status message arrives before."""
        ...

    def record(self, kind: str, doc: dict[str, Any]) -> None:
        """Keep a result (an IV scan, a calibration run) with the burn-in."""
        ...


def sensor_temperature(sensor: str | None, settings: BurninSettings, world: World) -> tuple[float | None, bool]:
    """(temperature, fresh) of a sensor reference (bath, external, env:<n>, module:<m>)."""
    if sensor is None:
        return None, False
    kind, _, name = sensor.partition(":")
    if sensor in ("bath", "external"):
        value = world.julabo.get("bath_temp" if sensor == "bath" else "external_temp")
        return value, world.julabo.fresh(settings.stale_s) and value is not None
    if kind == "env":
        src = world.env.get(name)
        value = src.get("temperature") if src else None
        return value, bool(src and src.fresh(settings.stale_s) and value is not None)
    if kind == "module":
        spec = settings.modules.get(name)
        if spec is None or spec.temp_sensor is None or spec.temp_sensor.startswith("module:"):
            return None, False
        return sensor_temperature(spec.temp_sensor, settings, world)
    return None, False


def dew_floor(settings: BurninSettings, world: World) -> tuple[float | None, str]:
    """The lowest allowed chiller setpoint (highest dew point + margin), or None with why it is unknown."""
    points: list[float] = []
    for name in settings.humidity_sensors:
        src = world.env.get(name)
        if src is None or not src.fresh(settings.stale_s):
            return None, f"humidity sensor env/{name} is {'silent' if src is None else 'stale'}"
        t, rh = src.get("temperature"), src.get("humidity")
        if not isinstance(t, (int, float)) or not isinstance(rh, (int, float)):
            return None, f"humidity sensor env/{name} gives no temperature/humidity"
        points.append(dew_point(float(t), float(rh)))
    if not points:
        return -math.inf, ""
    return max(points) + settings.limits.dewpoint_margin_k, ""


class Runner:
    """Base of the step runners."""

    needs: tuple[str, ...] = ()

    def __init__(self, step: Step) -> None:
        self.step = step
        self.started: float | None = None

    def tick(self, ctx: StepContext, now: float) -> Progress:
        if self.started is None:
            self.started = now
            return self.begin(ctx, now)
        return self.run(ctx, now)

    def begin(self, ctx: StepContext, now: float) -> Progress:
        return self.run(ctx, now)

    def run(self, ctx: StepContext, now: float) -> Progress:
        raise NotImplementedError

    def interrupt(self, ctx: StepContext, reason: str) -> None:
        """Stop what this step started (pause, hold, skip, abort). Default: nothing to undo."""

    def _timed_out(self, ctx: StepContext, now: float, timeout_s: float) -> bool:
        """The step has run longer than ``timeout_s`` (engine time), but never before ``MIN_REAL_TIMEOUT_S`` of
        real time."""
        return now - (self.started or now) > max(timeout_s, MIN_REAL_TIMEOUT_S * ctx.settings.time_scale)

    def _failed(self, ctx: StepContext, key: str) -> Progress | None:
        status, error = ctx.sent(key)
        if status == "failed":
            return Progress(Verdict.ABORT, f"{self.step.label()}: command failed after retries: {error}")
        return None


class PowerRunner(Runner):
    needs = ("caen",)

    def begin(self, ctx: StepContext, now: float) -> Progress:
        action = PowerAction(self.step.params["action"])
        w, mods = ctx.world, self.step.modules
        if action == PowerAction.LV_ON and w.julabo.get("state") != "RUNNING":
            return Progress(
                Verdict.WAIT_OPERATOR,
                f"LV on refused: the chiller is not running (julabo state {w.julabo.get('state')})",
            )
        if action == PowerAction.HV_ON:
            bad = [f"{m} ({w.module_state(m)})" for m in mods if w.module_state(m) not in LV_IS_ON]
            if bad:
                return Progress(Verdict.WAIT_OPERATOR, f"HV on refused: LV is not on for {', '.join(bad)}")
        if action == PowerAction.LV_OFF:
            bad = [f"{m} ({w.module_state(m)})" for m in mods if w.module_state(m) not in HV_IS_OFF | {"TRIPPED"}]
            if bad:
                return Progress(Verdict.WAIT_OPERATOR, f"LV off refused: HV is not off for {', '.join(bad)}")
        ctx.send(Command("caen", action.value, {"modules": list(mods)}, key="power"))
        return Progress(message=f"{action.value} sent")

    def run(self, ctx: StepContext, now: float) -> Progress:
        failed = self._failed(ctx, "power")
        if failed:
            return failed
        action = PowerAction(self.step.params["action"])
        states = {m: ctx.world.module_state(m) for m in self.step.modules}
        tripped = [m for m, s in states.items() if s == "TRIPPED"]
        if tripped and action in (PowerAction.LV_ON, PowerAction.HV_ON):
            return Progress(Verdict.ABORT, f"{', '.join(tripped)} tripped during {action.value}")
        waiting = [f"{m} ({s})" for m, s in states.items() if s not in TARGET_STATES[action] and s != "TRIPPED"]
        if ctx.sent("power")[0] == "ok" and not waiting:
            return Progress(Verdict.DONE, f"{action.value} done")
        if self._timed_out(ctx, now, self.step.params["timeout"]):
            return Progress(
                Verdict.ABORT,
                f"{action.value} not reached within {self.step.params['timeout']:g} s: {', '.join(waiting)}",
            )
        return Progress(message=f"{action.value}: waiting for {', '.join(waiting) or 'the reply'}")


class ChillerRunner(Runner):
    needs = ("julabo",)

    def begin(self, ctx: StepContext, now: float) -> Progress:
        action = ChillerAction(self.step.params["action"])
        if action == ChillerAction.STOP:
            lv_on = [m for m in ctx.settings.modules if ctx.world.module_state(m) not in ("OFF", None)]
            if lv_on:
                return Progress(Verdict.WAIT_OPERATOR, f"chiller stop refused: {', '.join(lv_on)} not off")
        ctx.send(Command("julabo", action.value, {}, key="chiller"))
        return Progress(message=f"chiller {action.value} sent")

    def run(self, ctx: StepContext, now: float) -> Progress:
        failed = self._failed(ctx, "chiller")
        if failed:
            return failed
        want = "RUNNING" if self.step.params["action"] == ChillerAction.START else "STOPPED"
        if ctx.sent("chiller")[0] == "ok" and ctx.world.julabo.get("state") == want:
            return Progress(Verdict.DONE, f"chiller {want}")
        if self._timed_out(ctx, now, self.step.params["timeout"]):
            return Progress(Verdict.ABORT, f"chiller not {want} within {self.step.params['timeout']:g} s")
        return Progress(message=f"waiting for the chiller to be {want}")


class TemperatureRunner(Runner):
    """Drive the chiller setpoint until the chosen sensor is within tolerance for ``stable_for``.

    The setpoint is never below the highest dew point + margin: a cold target is approached in steps, the
    setpoint following the dew point down as the air dries (HOLDING meanwhile, going on by itself)."""

    needs = ("julabo",)

    def __init__(self, step: Step) -> None:
        super().__init__(step)
        self.sent_setpoint: float | None = None
        self.stable_since: float | None = None
        self.n = 0

    def begin(self, ctx: StepContext, now: float) -> Progress:
        if ctx.world.julabo.get("state") != "RUNNING":
            return Progress(
                Verdict.WAIT_OPERATOR, f"the chiller is not running (julabo state {ctx.world.julabo.get('state')})"
            )
        if ctx.world.julabo.get("active_setpoint") not in (SETPOINT_INDEX, None):
            ctx.send(Command("julabo", "select_setpoint", {"index": SETPOINT_INDEX}, key="select"))
        return self.run(ctx, now)

    def run(self, ctx: StepContext, now: float) -> Progress:
        p, s = self.step.params, ctx.settings
        for key in ("select", f"sp{self.n}"):
            failed = self._failed(ctx, key)
            if failed:
                return failed
        if ctx.world.julabo.get("state") != "RUNNING":
            return Progress(
                Verdict.WAIT_OPERATOR, f"the chiller stopped (julabo state {ctx.world.julabo.get('state')})"
            )
        temp, fresh = sensor_temperature(p["sensor"], s, ctx.world)
        if not fresh or temp is None:
            return Progress(Verdict.WAIT_OPERATOR, f"sensor {p['sensor']} gives no fresh temperature")
        floor, why = dew_floor(s, ctx.world)
        if floor is None:
            return Progress(Verdict.WAIT_OPERATOR, f"dew point unknown: {why}")
        target = p["target"]
        near = abs(temp - target) <= p["tolerance"]
        # overdrive (approach_offset) only towards the target: past it (an overshoot) the hold offset applies,
        # else a cold approach that undershot would be driven further away for ever
        towards = (p["approach_offset"] < 0 and temp > target) or (p["approach_offset"] > 0 and temp < target)
        wanted = target + (p["approach_offset"] if towards and not near else p["hold_offset"])
        wanted = min(max(wanted, s.limits.setpoint_min), s.limits.setpoint_max)
        setpoint = wanted
        limited = wanted < floor
        if limited:
            setpoint = math.ceil(floor * 10) / 10
        if setpoint > s.limits.setpoint_max:
            return Progress(Verdict.WAIT_OPERATOR, f"dew point + margin {floor:.1f} C is above the setpoint limit")
        last = self.sent_setpoint
        if (
            last is None
            or setpoint > last + 1e-6
            or (last - setpoint) >= max(s.setpoint_step_k, 1e-6)
            or (not limited and abs(setpoint - last) > 1e-6)
        ):
            self.n += 1
            ctx.send(
                Command(
                    "julabo", "set_setpoint", {"index": SETPOINT_INDEX, "value": round(setpoint, 2)}, key=f"sp{self.n}"
                )
            )
            self.sent_setpoint = setpoint
        if near:
            self.stable_since = self.stable_since if self.stable_since is not None else now
            if now - self.stable_since >= p["stable_for"]:
                return Progress(
                    Verdict.DONE,
                    f"{temp:.2f} C on {p['sensor']} (target {target:g} C)",
                    {"temperature": temp, "setpoint": self.sent_setpoint},
                )
            ctx.wake(self.stable_since + p["stable_for"])
        else:
            self.stable_since = None
        if now - (self.started or now) > p["timeout"]:
            return Progress(
                Verdict.WAIT_OPERATOR,
                f"target {target:g} C not reached within {p['timeout']:g} s ({temp:.2f} C on {p['sensor']})",
            )
        if limited and not near:
            return Progress(
                Verdict.WAIT_AUTO,
                f"waiting for dry air: setpoint held at {setpoint:.1f} C "
                f"(dew point + margin) instead of {wanted:.1f} C; {temp:.2f} C on {p['sensor']}",
            )
        return Progress(message=f"{temp:.2f} C on {p['sensor']}, target {target:g} C, setpoint {setpoint:.1f} C")


class WaitRunner(Runner):
    needs = ("caen", "julabo")

    def run(self, ctx: StepContext, now: float) -> Progress:
        left = self.step.params["duration"] - (now - (self.started or now))
        if left <= 0:
            return Progress(Verdict.DONE, "waited")
        ctx.wake(now + left)
        return Progress(message=f"{left:.0f} s left")


class PromptRunner(Runner):
    def __init__(self, step: Step) -> None:
        super().__init__(step)
        self.acknowledged_by: str | None = None

    def run(self, ctx: StepContext, now: float) -> Progress:
        if self.acknowledged_by is not None:
            return Progress(Verdict.DONE, f"acknowledged by {self.acknowledged_by}")
        return Progress(message=f"waiting for the operator to acknowledge: {self.step.params['message']}")


class IvRunner(Runner):
    needs = ("caen",)

    def __init__(self, step: Step) -> None:
        super().__init__(step)
        self.scan: IvScan | None = None
        self.preparing = False
        self.n = 0
        self.keys: list[str] = []
        self.open_keys: set[str] = set()  #: keys whose command has no outcome yet

    def begin(self, ctx: StepContext, now: float) -> Progress:
        w, mods = ctx.world, self.step.modules
        bad = [f"{m} ({w.module_state(m)})" for m in mods if w.module_state(m) not in LV_IS_ON]
        if bad:
            return Progress(Verdict.WAIT_OPERATOR, f"IV scan needs LV on: {', '.join(bad)}")
        hv_on = [m for m in mods if w.module_state(m) != "LV_ON"]
        if hv_on:  # a scan interrupted by a pause or a restart left HV on: switch it off, then start from 0 V
            ctx.send(Command("caen", "hv_off", {"modules": hv_on}, key="pre_off"))
            self.preparing = True
            return Progress(message=f"IV scan: switching HV off first ({', '.join(hv_on)})")
        return self._start(ctx, now)

    def _start(self, ctx: StepContext, now: float) -> Progress:
        w, mods = ctx.world, self.step.modules
        self.preparing = False
        prof = self.step.params["profile"]
        comp = self.step.params.get("compliance_ua") or prof.compliance_ua
        s = ctx.settings
        self.scan = IvScan(
            prof, {m: comp or s.modules[m].compliance_ua for m in mods}, s.limits.hv_polarity, real_s=s.time_scale
        )
        v0 = {}
        for m in mods:
            bias = s.modules[m].bias_v
            v0[m] = bias if bias is not None else w.modules[m].get("hv_v0set")
        self._send(ctx, self.scan.begin(now, v0))
        return Progress(message="IV scan started")

    def _send(self, ctx: StepContext, commands: list[Command]) -> None:
        for c in commands:
            self.n += 1
            key = f"{c.key}#{self.n}"
            self.keys.append(key)
            self.open_keys.add(key)
            ctx.send(Command(c.service, c.name, c.args, key=key))

    def run(self, ctx: StepContext, now: float) -> Progress:
        if self.preparing:
            failed = self._failed(ctx, "pre_off")
            if failed:
                return failed
            states = [ctx.world.module_state(m) for m in self.step.modules]
            if ctx.sent("pre_off")[0] == "ok" and all(st == "LV_ON" for st in states):
                return self._start(ctx, now)
            if any(st not in LV_IS_ON for st in states):
                return Progress(Verdict.WAIT_OPERATOR, f"IV scan needs LV on: module states {states}")
            if self._timed_out(ctx, now, 900.0):
                return Progress(Verdict.ABORT, "HV did not go off before the IV scan within 900 s")
            return Progress(message="IV scan: waiting for HV off")
        assert self.scan is not None
        for key in list(self.open_keys):  # only commands still in flight: a scan sends hundreds
            status, error = ctx.sent(key)
            if status == "failed":
                failed = Progress(Verdict.ABORT, f"{self.step.label()}: command failed after retries: {error}")
                self.interrupt(ctx, failed.message)
                return failed
            if status == "ok":
                self.open_keys.discard(key)
        temps = {m: sensor_temperature(f"module:{m}", ctx.settings, ctx.world)[0] for m in self.step.modules}
        self._send(ctx, self.scan.tick(now, ctx.world.modules, temps))
        ctx.wake(self.scan.next_due())
        if self.scan.finished:
            if self.open_keys:
                return Progress(message="IV scan: waiting for the last replies")
            # the scan ends with HV off: a module still ramping its last volts down is not done yet (LV off,
            # typically the next step, refuses a module whose HV is not off)
            down = [m for m in self.step.modules if ctx.world.module_state(m) not in HV_IS_OFF | {"TRIPPED"}]
            if down and now - self.scan.finished_at(now) <= IV_HV_OFF_TIMEOUT_S:
                return Progress(message=f"IV scan: waiting for HV off ({', '.join(down)})")
            results = self.scan.results()
            ctx.record(
                "iv_scan", {"step": self.step.index, "profile": self.step.params["profile_name"], "modules": results}
            )
            summary = {m: r["outcome"] for m, r in results.items()}
            return Progress(Verdict.DONE, "IV scan: " + ", ".join(f"{m} {o}" for m, o in summary.items()), summary)
        states = {
            m: f"{s.phase.value} {len(s.points)}/{len(self.scan.profile.points)}" for m, s in self.scan.scans.items()
        }
        return Progress(message="IV scan: " + ", ".join(f"{m} {v}" for m, v in states.items()))

    def interrupt(self, ctx: StepContext, reason: str) -> None:
        if self.scan is not None and not self.scan.finished:
            self._send(ctx, self.scan.interrupt(reason))
            ctx.record(
                "iv_scan",
                {
                    "step": self.step.index,
                    "profile": self.step.params["profile_name"],
                    "modules": self.scan.results(),
                    "interrupted": reason,
                },
            )


class CalibrationRunner(Runner):
    needs = ("ph2acf", "caen")

    def __init__(self, step: Step) -> None:
        super().__init__(step)
        self.seen_active = False
        self.ended_at: float | None = None
        self.uid: str | None = None

    def begin(self, ctx: StepContext, now: float) -> Progress:
        w, mods = ctx.world, self.step.modules
        bad = [f"{m} ({w.module_state(m)})" for m in mods if w.module_state(m) not in LV_IS_ON]
        if bad:
            return Progress(Verdict.WAIT_OPERATOR, f"calibration needs LV on: {', '.join(bad)}")
        if w.ph2acf.get("state") not in ("IDLE", "ERROR"):
            return Progress(Verdict.WAIT_OPERATOR, f"Ph2_ACF is busy (state {w.ph2acf.get('state')})")
        args: dict[str, Any] = {
            "calibration": self.step.params["calibration"],
            "modules": list(mods),
            "operator": ctx.operator,
            "comment": f"burn-in {ctx.uid} step {self.step.index + 1}",
        }
        if self.step.params.get("config_file"):
            args["config_file"] = self.step.params["config_file"]
        ctx.send(Command("ph2acf", "start", args, key="start"))
        return Progress(message=f"calibration {self.step.params['calibration']} requested")

    def run(self, ctx: StepContext, now: float) -> Progress:
        status, error = ctx.sent("start")
        if status == "failed":
            return Progress(Verdict.WAIT_OPERATOR, f"Ph2_ACF refused the run: {error}")
        if status != "ok":
            return Progress(message="waiting for Ph2_ACF to accept the run")
        result = ctx.reply_result("start") or {}
        self.uid = result.get("uid", self.uid)
        state = ctx.world.ph2acf.get("state")
        if state not in ("IDLE", "ERROR"):
            self.seen_active = True
        named = self.uid is not None and ctx.world.ph2acf.get("last_uid") == self.uid  # the status names its end
        if (self.seen_active or named) and state in ("IDLE", "ERROR") and self.ended_at is None:
            self.ended_at = now
            if not named:  # the status does not tell this run's outcome: ask
                ctx.send(Command("ph2acf", "status", {}, key="last"))
        if self.ended_at is not None:
            st, err = ctx.sent("last")
            if st == "failed":
                return Progress(Verdict.WAIT_OPERATOR, f"cannot read the run outcome: {err}")
            told = ctx.world.ph2acf
            if st is None and named:
                last: dict[str, Any] | None = {
                    "uid": self.uid,
                    "run": told.get("last_run"),
                    "outcome": told.get("last_outcome"),
                    "error": told.get("last_error"),
                }
            else:
                last = (ctx.reply_result("last") or {}).get("last") or {} if st == "ok" else None
            if last is not None:
                doc = {
                    "step": self.step.index,
                    "calibration": self.step.params["calibration"],
                    "uid": self.uid,
                    "run": last.get("run"),
                    "outcome": last.get("outcome"),
                    "error": last.get("error"),
                }
                ctx.record("calibration", doc)
                if last.get("uid") == self.uid and last.get("outcome") == "done":
                    return Progress(Verdict.DONE, f"run {last.get('run')} done", doc)
                return Progress(
                    Verdict.WAIT_OPERATOR,
                    f"calibration {self.step.params['calibration']} run "
                    f"{last.get('run')}: {last.get('outcome')} {last.get('error') or ''}".strip(),
                    doc,
                )
            return Progress(message="reading the run outcome")
        if self._timed_out(ctx, now, self.step.params["timeout"]):
            self.interrupt(ctx, "timeout")
            return Progress(
                Verdict.WAIT_OPERATOR, f"calibration not finished within {self.step.params['timeout']:g} s (aborted)"
            )
        return Progress(
            message=f"calibration {self.step.params['calibration']}: Ph2_ACF {state}, "
            f"{ctx.world.ph2acf.get('progress', 0)} %"
        )

    def interrupt(self, ctx: StepContext, reason: str) -> None:
        if self.started is not None and self.ended_at is None:
            ctx.send(Command("ph2acf", "abort", {}, key="abort"))


RUNNERS: dict[StepKind, type[Runner]] = {
    StepKind.POWER: PowerRunner,
    StepKind.CHILLER: ChillerRunner,
    StepKind.TEMPERATURE: TemperatureRunner,
    StepKind.WAIT: WaitRunner,
    StepKind.PROMPT: PromptRunner,
    StepKind.IV_SCAN: IvRunner,
    StepKind.CALIBRATION: CalibrationRunner,
}


def runner_for(step: Step) -> Runner:
    return RUNNERS[step.kind](step)
