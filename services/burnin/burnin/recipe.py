"""Burn-in recipes: YAML → validated, expanded list of steps with duration estimates (pure, no I/O).

A recipe is refused as a whole, before anything moves, with every problem found, each naming the step (its
place in the file, its name, its kind) and the field. Besides types and ranges, a recipe is checked by
following the power state of every module through the expanded steps: HV on only where LV is on, LV off only
after HV off, an IV scan only with LV on and HV off; and every IV point against the module's HV limit.

Recipe shape::

    name: standard-burnin
    description: ...
    defaults: {temperature: {sensor: env:carrier, tolerance: 1.0, stable_for: 60, timeout: 2h}}
    iv_profiles:
      standard: {segments: [{from: 0, to: -200, step: 10}, {from: -200, to: -800, step: 20}],
                 settle: 1, ramp: 10}
    blocks:                      # named step lists, included with `- use: <block>`
      iv_block: [...]
    steps:
      - chiller: start
      - temperature: {target: 20, name: warm}
      - power: lv_on             # shorthand for {action: lv_on, modules: all}
      - wait: 10m
      - iv_scan: standard        # shorthand for {profile: standard}
      - calibration: {calibration: pedenoise}
      - prompt: "check the modules"
      - repeat: {times: 17, steps: [...]}
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import yaml

from .settings import SENSOR_HELP, BurninSettings


class StepKind(StrEnum):
    POWER = "power"
    CHILLER = "chiller"
    TEMPERATURE = "temperature"
    WAIT = "wait"
    IV_SCAN = "iv_scan"
    CALIBRATION = "calibration"
    PROMPT = "prompt"
    REPEAT = "repeat"
    USE = "use"


class PowerAction(StrEnum):
    LV_ON = "lv_on"
    HV_ON = "hv_on"
    HV_OFF = "hv_off"
    LV_OFF = "lv_off"


class ChillerAction(StrEnum):
    START = "start"
    STOP = "stop"


#: the field a scalar shorthand (``- power: lv_on``) stands for
SHORTHAND = {
    StepKind.POWER: "action",
    StepKind.CHILLER: "action",
    StepKind.TEMPERATURE: "target",
    StepKind.WAIT: "duration",
    StepKind.IV_SCAN: "profile",
    StepKind.CALIBRATION: "calibration",
    StepKind.PROMPT: "message",
    StepKind.USE: "block",
}

MAX_STEPS = 100_000
MAX_DEPTH = 8
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class Problem:
    """One reason a recipe is refused."""

    where: str
    field: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.where}: field '{self.field}': {self.message}" if self.field else f"{self.where}: {self.message}"


class RecipeError(ValueError):
    """The recipe is refused; ``problems`` lists every reason."""

    def __init__(self, name: str, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"recipe {name!r} refused ({len(self.problems)} problem(s)):\n{lines}")


@dataclass(frozen=True)
class IvProfile:
    """An IV scan: the bias points in order, settling before each reading, ramp speed, stop criteria."""

    points: tuple[float, ...]
    settle_s: float = 1.0
    ramp_v_per_s: float = 10.0
    compliance_ua: float | None = None  #: None = each module's configured compliance
    breakdown_slope: float = 5.0  #: stop when d ln I / d ln |V| between two points exceeds this ...
    breakdown_min_ua: float = 0.05  #: ... and |I| is above this (below it the slope is noise)
    reach_tolerance_v: float = 2.0  #: a point is reached when |VMon - set| is within this

    def physical_s(self) -> float:
        """Ramps between points plus settling: the physical time of one scan (and its ramp down)."""
        total, v = 0.0, 0.0
        for p in self.points:
            total += abs(p - v) / self.ramp_v_per_s + self.settle_s
            v = p
        return total + abs(v) / self.ramp_v_per_s


@dataclass(frozen=True)
class Step:
    """One step of the expanded recipe, ready to run."""

    index: int  #: 0-based position in the expanded list
    kind: StepKind
    name: str
    where: str  #: place in the recipe file, e.g. "step 5 > repeat 3/17 > step 2"
    params: Mapping[str, Any]
    modules: tuple[str, ...] = ()
    cycle: int = 0  #: thermal cycle this step belongs to (a cycle starts with each cool-down)
    estimate_s: float = 0.0

    def label(self) -> str:
        return f"{self.name} ({self.kind.value})"

    def describe(self) -> str:
        """One line for ``plan``."""
        p = self.params
        if self.kind in (StepKind.POWER, StepKind.CHILLER):
            detail = p["action"] + (f" {','.join(self.modules)}" if self.kind == StepKind.POWER else "")
        elif self.kind == StepKind.TEMPERATURE:
            detail = f"{p['target']:+.1f} C on {p['sensor']} +/-{p['tolerance']} K for {p['stable_for']:.0f} s"
        elif self.kind == StepKind.WAIT:
            detail = f"{p['duration']:.0f} s"
        elif self.kind == StepKind.IV_SCAN:
            prof: IvProfile = p["profile"]
            detail = (
                f"{p['profile_name']} {len(prof.points)} points to {prof.points[-1]:+.0f} V on {','.join(self.modules)}"
            )
        elif self.kind == StepKind.CALIBRATION:
            detail = f"{p['calibration']} on {','.join(self.modules)}"
        else:
            detail = p["message"]
        return detail


@dataclass(frozen=True)
class Recipe:
    """A validated, expanded recipe."""

    name: str
    description: str
    text: str  #: the recipe as given (stored with the burn-in)
    steps: tuple[Step, ...]
    modules: tuple[str, ...]
    cycles: int = 0
    profiles: Mapping[str, IvProfile] = field(default_factory=dict)

    @property
    def estimate_s(self) -> float:
        return sum(s.estimate_s for s in self.steps)

    def remaining_s(self, index: int) -> float:
        """Estimated seconds from the start of step ``index`` to the end."""
        return sum(s.estimate_s for s in self.steps[index:])

    def plan_lines(self) -> list[str]:
        """The expanded steps, one line each, then the total."""
        lines = [
            f"recipe {self.name}: {len(self.steps)} steps, {self.cycles} thermal cycle(s), "
            f"modules {','.join(self.modules)}"
        ]
        at = 0.0
        for s in self.steps:
            lines.append(
                f"{s.index + 1:5d}  {_hms(at):>9}  c{s.cycle:<3d} {s.kind.value:<11} {s.name:<28.28} {s.describe()}"
            )
            at += s.estimate_s
        lines.append(f"estimated duration {_hms(at)} ({at / 3600:.1f} h)")
        return lines


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$")
_UNITS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or "90", "90s", "10m", "1.5h"; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a text like '10m', '1.5h'")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{value!r} is not a non-negative finite number of seconds")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"{value!r} is not a duration (seconds, or a text like '600s', '10m', '1.5h')")


class _Ctx:
    """Collects problems and expanded steps while walking the recipe."""

    def __init__(self, settings: BurninSettings, modules: tuple[str, ...], raw: Mapping[str, Any]) -> None:
        self.settings = settings
        self.modules = modules
        self.problems: list[Problem] = []
        self.steps: list[dict[str, Any]] = []
        self.defaults: Mapping[str, Any] = {}
        self.profiles: dict[str, IvProfile] = {}
        self.blocks: Mapping[str, Any] = {}
        self.raw = raw

    def problem(self, where: str, field_: str | None, message: str) -> None:
        if len(self.problems) < 200:
            self.problems.append(Problem(where, field_, message))


_STEP_FIELDS: dict[StepKind, set[str]] = {
    StepKind.POWER: {"action", "modules", "timeout"},
    StepKind.CHILLER: {"action", "timeout"},
    StepKind.TEMPERATURE: {"target", "sensor", "tolerance", "stable_for", "timeout", "approach_offset", "hold_offset"},
    StepKind.WAIT: {"duration"},
    StepKind.IV_SCAN: {"profile", "modules", "compliance_ua"},
    StepKind.CALIBRATION: {"calibration", "modules", "timeout", "config_file"},
    StepKind.PROMPT: {"message"},
    StepKind.REPEAT: {"times", "steps"},
    StepKind.USE: {"block"},
}
_TEMPERATURE_DEFAULTS = {
    "tolerance": 1.0,
    "stable_for": 60.0,
    "timeout": 7200.0,
    "approach_offset": 0.0,
    "hold_offset": 0.0,
}
_TIMEOUT_DEFAULTS = {StepKind.POWER: 300.0, StepKind.CHILLER: 60.0, StepKind.CALIBRATION: 3600.0}


def load_recipe(text: str, settings: BurninSettings, modules: Sequence[str] | None = None) -> Recipe:
    """Parse and validate ``text`` for a burn-in of ``modules`` (default: every module of the stand).

    Raises :class:`RecipeError` listing every problem."""
    name = "?"
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(name, [Problem("recipe", None, f"invalid YAML: {exc}")]) from None
    if not isinstance(raw, Mapping):
        raise RecipeError(name, [Problem("recipe", None, "the top level must be a mapping with 'name' and 'steps'")])
    name = str(raw.get("name", "?"))
    mods = tuple(modules) if modules else tuple(settings.modules)
    ctx = _Ctx(settings, mods, raw)
    for m in mods:
        if m not in settings.modules:
            ctx.problem("burn-in", "modules", f"unknown module {m!r}; the stand has {', '.join(settings.modules)}")
    unknown = sorted(set(map(str, raw)) - {"name", "description", "defaults", "iv_profiles", "blocks", "steps"})
    if unknown:
        ctx.problem(
            "recipe",
            None,
            f"unknown top-level key(s) {', '.join(unknown)} "
            "(known: name, description, defaults, iv_profiles, blocks, steps)",
        )
    if not isinstance(raw.get("name"), str) or not _NAME.match(raw["name"]):
        ctx.problem("recipe", "name", "a name of 1-64 letters, digits, '_', '.', '-' is required")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        ctx.problem("recipe", "defaults", "must be a mapping of step kind -> default fields")
        defaults = {}
    for kind in defaults:
        if kind not in {StepKind.TEMPERATURE.value, StepKind.POWER.value, StepKind.CALIBRATION.value}:
            ctx.problem("recipe", f"defaults.{kind}", "defaults exist for temperature, power and calibration only")
        elif not isinstance(defaults[kind], Mapping):
            ctx.problem("recipe", f"defaults.{kind}", "must be a mapping")
    ctx.defaults = {k: v for k, v in defaults.items() if isinstance(v, Mapping)}
    _parse_profiles(ctx, raw.get("iv_profiles") or {})
    blocks = raw.get("blocks") or {}
    if not isinstance(blocks, Mapping):
        ctx.problem("recipe", "blocks", "must be a mapping of block name -> list of steps")
        blocks = {}
    ctx.blocks = blocks
    steps = raw.get("steps")
    if not isinstance(steps, list) or not steps:
        ctx.problem("recipe", "steps", "a non-empty list of steps is required")
    else:
        _walk(ctx, steps, "step ", 0, ())
    if not ctx.problems:
        _check_power_sequence(ctx)
    if ctx.problems:
        raise RecipeError(name, ctx.problems)
    built = _finish(ctx)
    return Recipe(
        name=name,
        description=str(raw.get("description") or ""),
        text=text,
        steps=built,
        modules=mods,
        cycles=max((s.cycle for s in built), default=0),
        profiles=dict(ctx.profiles),
    )


def _parse_profiles(ctx: _Ctx, raw: Any) -> None:
    if not isinstance(raw, Mapping):
        ctx.problem("recipe", "iv_profiles", "must be a mapping of profile name -> profile")
        return
    for pname, body in raw.items():
        where = f"iv_profiles.{pname}"
        prof = _parse_profile(ctx, body, where)
        if prof is not None:
            ctx.profiles[str(pname)] = prof


def _parse_profile(ctx: _Ctx, body: Any, where: str) -> IvProfile | None:
    if not isinstance(body, Mapping):
        ctx.problem(where, None, "an IV profile must be a mapping (segments, settle, ramp, ...)")
        return None
    allowed = {"segments", "settle", "ramp", "compliance_ua", "breakdown_slope", "breakdown_min_ua", "reach_tolerance"}
    for key in sorted(set(map(str, body)) - allowed):
        ctx.problem(where, key, f"unknown field (known: {', '.join(sorted(allowed))})")
    segments = body.get("segments")
    if not isinstance(segments, list) or not segments:
        ctx.problem(where, "segments", "a list of {from, to, step} (volts) is required")
        return None
    polarity = ctx.settings.limits.hv_polarity
    points: list[float] = []
    ok = True
    for i, seg in enumerate(segments):
        f = f"segments[{i}]"
        if not isinstance(seg, Mapping) or not {"from", "to", "step"} <= set(seg):
            ctx.problem(where, f, "each segment needs from, to and step (volts)")
            ok = False
            continue
        try:
            v0, v1, step = (float(_finite(seg[k])) for k in ("from", "to", "step"))
        except ValueError as exc:
            ctx.problem(where, f, str(exc))
            ok = False
            continue
        if step <= 0:
            ctx.problem(where, f"{f}.step", f"must be a positive number of volts, got {step:g}")
            ok = False
            continue
        for v in (v0, v1):
            if v * polarity < 0:
                ctx.problem(
                    where,
                    f,
                    f"{v:g} V has the wrong sign: this stand's bias is {'negative' if polarity < 0 else 'positive'}",
                )
                ok = False
        n = round(abs(v1 - v0) / step)
        if n > 1000 or abs(n * step - abs(v1 - v0)) > 1e-6:
            ctx.problem(where, f, f"{v0:g} -> {v1:g} V is not a whole number of {step:g} V steps")
            ok = False
            continue
        direction = 1.0 if v1 >= v0 else -1.0
        for k in range(n + 1):
            v = round(v0 + direction * k * step, 6)
            if not points or abs(points[-1] - v) > 1e-9:
                points.append(v)
    if not ok:
        return None
    kw: dict[str, Any] = {}
    for key, attr, minimum in (
        ("settle", "settle_s", 0.0),
        ("ramp", "ramp_v_per_s", 1e-3),
        ("compliance_ua", "compliance_ua", 1e-6),
        ("breakdown_slope", "breakdown_slope", 1e-3),
        ("breakdown_min_ua", "breakdown_min_ua", 0.0),
        ("reach_tolerance", "reach_tolerance_v", 0.01),
    ):
        if key in body:
            try:
                value = parse_duration(body[key]) if key == "settle" else float(_finite(body[key]))
            except ValueError as exc:
                ctx.problem(where, key, str(exc))
                return None
            if value < minimum:
                ctx.problem(where, key, f"{value:g} is below the minimum {minimum:g}")
                return None
            kw[attr] = value
    return IvProfile(points=tuple(points), **kw)


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    return float(value)


def _step_kind(ctx: _Ctx, raw: Any, where: str) -> tuple[StepKind, Mapping[str, Any]] | None:
    if not isinstance(raw, Mapping):
        ctx.problem(where, None, f"a step must be a mapping like {{wait: 10m}}, got {type(raw).__name__}")
        return None
    kinds = [k for k in raw if k != "name"]
    if len(kinds) != 1:
        ctx.problem(
            where,
            None,
            f"a step has exactly one kind ({', '.join(k.value for k in StepKind)}), "
            f"got {', '.join(map(str, kinds)) or 'none'}",
        )
        return None
    key = str(kinds[0])
    try:
        kind = StepKind(key)
    except ValueError:
        ctx.problem(where, None, f"unknown step '{key}' (known: {', '.join(k.value for k in StepKind)})")
        return None
    body = raw[key]
    if not isinstance(body, Mapping):
        body = {SHORTHAND[kind]: body} if kind in SHORTHAND else {}
        if kind == StepKind.REPEAT:
            ctx.problem(where, None, "repeat needs a mapping {times: N, steps: [...]}")
            return None
    body = dict(body)
    if "name" in raw:
        body.setdefault("name", raw["name"])
    return kind, body


def _walk(ctx: _Ctx, steps: list[Any], prefix: str, depth: int, cycle_path: tuple[str, ...]) -> None:
    if depth > MAX_DEPTH:
        ctx.problem(prefix.strip(), None, f"repeats and blocks nested deeper than {MAX_DEPTH}")
        return
    for i, raw in enumerate(steps):
        if len(ctx.steps) > MAX_STEPS:
            ctx.problem("recipe", None, f"more than {MAX_STEPS} steps after expansion")
            return
        where_base = f"{prefix}{i + 1}"
        got = _step_kind(ctx, raw, where_base)
        if got is None:
            continue
        kind, body = got
        name = body.pop("name", None)
        if name is not None and not isinstance(name, str):
            ctx.problem(where_base, "name", "must be a text")
            name = None
        where = f"{where_base} '{name}' ({kind.value})" if name else f"{where_base} ({kind.value})"
        for key in sorted(set(map(str, body)) - _STEP_FIELDS[kind]):
            ctx.problem(where, key, f"unknown field (known: {', '.join(sorted(_STEP_FIELDS[kind]))})")
        if kind == StepKind.REPEAT:
            times = body.get("times")
            inner = body.get("steps")
            if isinstance(times, bool) or not isinstance(times, int) or times < 1:
                ctx.problem(where, "times", f"must be an integer >= 1, got {times!r}")
                continue
            if not isinstance(inner, list) or not inner:
                ctx.problem(where, "steps", "a non-empty list of steps is required")
                continue
            for k in range(times):
                before = len(ctx.problems)
                _walk(ctx, inner, f"{where_base} > repeat {k + 1}/{times} > step ", depth + 1, cycle_path)
                if len(ctx.problems) > before:
                    break  # the same problem in every iteration says nothing new
            continue
        if kind == StepKind.USE:
            block = body.get("block")
            if not isinstance(block, str) or block not in ctx.blocks:
                ctx.problem(where, "block", f"unknown block {block!r} (defined: {', '.join(map(str, ctx.blocks))})")
                continue
            inner = ctx.blocks[block]
            if not isinstance(inner, list) or not inner:
                ctx.problem(f"blocks.{block}", None, "a block is a non-empty list of steps")
                continue
            _walk(ctx, inner, f"{where_base} > block {block} > step ", depth + 1, cycle_path)
            continue
        params = _step_params(ctx, kind, body, where)
        if params is None:
            continue
        ctx.steps.append({"kind": kind, "name": name or _default_name(kind, params), "where": where, **params})


def _default_name(kind: StepKind, params: Mapping[str, Any]) -> str:
    if kind in (StepKind.POWER, StepKind.CHILLER):
        return f"{kind.value} {params['params']['action']}"
    if kind == StepKind.TEMPERATURE:
        return f"temperature {params['params']['target']:+g} C"
    if kind == StepKind.WAIT:
        return f"wait {params['params']['duration']:g} s"
    if kind == StepKind.IV_SCAN:
        return f"iv scan {params['params']['profile_name']}"
    if kind == StepKind.CALIBRATION:
        return f"calibration {params['params']['calibration']}"
    return "operator prompt"


def _number_field(
    ctx: _Ctx,
    body: Mapping[str, Any],
    key: str,
    where: str,
    default: float | None,
    *,
    duration: bool = False,
    minimum: float | None = None,
) -> float | None:
    if key not in body:
        if default is None:
            ctx.problem(where, key, "missing (required)")
        return default
    try:
        value = parse_duration(body[key]) if duration else _finite(body[key])
    except ValueError as exc:
        ctx.problem(where, key, str(exc))
        return None
    if minimum is not None and value < minimum:
        ctx.problem(where, key, f"{value:g} is below the minimum {minimum:g}")
        return None
    return value


def _modules_field(ctx: _Ctx, body: Mapping[str, Any], where: str) -> tuple[str, ...] | None:
    raw = body.get("modules", "all")
    if raw == "all":
        return ctx.modules
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(m, str) for m in raw):
        ctx.problem(where, "modules", "must be 'all' or a non-empty list of module names")
        return None
    missing = [m for m in raw if m not in ctx.modules]
    if missing:
        ctx.problem(where, "modules", f"{', '.join(missing)} not in this burn-in (modules: {', '.join(ctx.modules)})")
        return None
    return tuple(raw)


def _step_params(ctx: _Ctx, kind: StepKind, body: dict[str, Any], where: str) -> dict[str, Any] | None:
    """The checked fields of one (non-repeat) step as ``{"params": {...}, "modules": (...)}``; None if bad."""
    before = len(ctx.problems)
    defaults = dict(ctx.defaults.get(kind.value, {}))
    params: dict[str, Any] = {}
    modules: tuple[str, ...] = ()
    lim = ctx.settings.limits
    if kind in (StepKind.POWER, StepKind.CHILLER):
        choices = PowerAction if kind == StepKind.POWER else ChillerAction
        action = body.get("action")
        if action is None:
            ctx.problem(where, "action", f"missing (one of {', '.join(c.value for c in choices)})")
        elif action not in {c.value for c in choices}:
            ctx.problem(where, "action", f"unknown action {action!r} (one of {', '.join(c.value for c in choices)})")
        params["action"] = action
        params["timeout"] = _number_field(
            ctx, body, "timeout", where, defaults.get("timeout", _TIMEOUT_DEFAULTS[kind]), duration=True, minimum=1
        )
        if kind == StepKind.POWER:
            modules = _modules_field(ctx, body, where) or ()
    elif kind == StepKind.TEMPERATURE:
        target = _number_field(ctx, body, "target", where, None)
        sensor = body.get("sensor", defaults.get("sensor"))
        if not isinstance(sensor, str) or not _valid_sensor(sensor, ctx):
            ctx.problem(where, "sensor", f"missing or unknown sensor {sensor!r} ({SENSOR_HELP})")
        params["sensor"] = sensor
        params["target"] = target
        for key, default in _TEMPERATURE_DEFAULTS.items():
            dur = key in ("stable_for", "timeout")
            params[key] = _number_field(
                ctx,
                body,
                key,
                where,
                float(defaults.get(key, default)) if not dur else parse_duration(defaults.get(key, default)),
                duration=dur,
                minimum=0.0 if key in ("tolerance", "stable_for") else (1.0 if key == "timeout" else None),
            )
        if target is not None:
            if not lim.target_min <= target <= lim.target_max:
                ctx.problem(
                    where,
                    "target",
                    f"{target:g} C is outside the stand's limits [{lim.target_min:g}, {lim.target_max:g}] C",
                )
            for off in ("approach_offset", "hold_offset"):
                if params[off] is None:
                    continue
                sp = target + params[off]
                if not lim.setpoint_min <= sp <= lim.setpoint_max:
                    ctx.problem(
                        where,
                        off,
                        f"the chiller setpoint {sp:g} C (target {target:g} + {params[off]:g}) is "
                        f"outside the setpoint limits [{lim.setpoint_min:g}, {lim.setpoint_max:g}] C",
                    )
        if params.get("tolerance") == 0:
            ctx.problem(where, "tolerance", "must be above 0 K")
    elif kind == StepKind.WAIT:
        params["duration"] = _number_field(ctx, body, "duration", where, None, duration=True, minimum=0)
    elif kind == StepKind.IV_SCAN:
        prof_raw = body.get("profile")
        if isinstance(prof_raw, Mapping):
            profile = _parse_profile(ctx, prof_raw, f"{where} profile")
            pname = "inline"
        elif isinstance(prof_raw, str) and prof_raw in ctx.profiles:
            profile, pname = ctx.profiles[prof_raw], prof_raw
        else:
            ctx.problem(where, "profile", f"unknown IV profile {prof_raw!r} (defined: {', '.join(ctx.profiles)})")
            profile, pname = None, "?"
        modules = _modules_field(ctx, body, where) or ()
        compliance = _number_field(ctx, body, "compliance_ua", where, -1.0, minimum=-1.0)
        params.update(profile=profile, profile_name=pname, compliance_ua=None if compliance == -1.0 else compliance)
        if profile is not None:
            peak = max(abs(v) for v in profile.points)
            for m in modules:
                spec = ctx.settings.modules.get(m)
                if spec is not None and peak > spec.hv_limit_v:
                    ctx.problem(
                        where,
                        "profile",
                        f"the scan goes to {peak:g} V but module {m}'s HV channel is limited to {spec.hv_limit_v:g} V",
                    )
    elif kind == StepKind.CALIBRATION:
        cal = body.get("calibration")
        if not isinstance(cal, str) or not _NAME.match(cal):
            ctx.problem(where, "calibration", f"missing or malformed calibration name {cal!r}")
        params["calibration"] = cal
        params["config_file"] = body.get("config_file", defaults.get("config_file"))
        if params["config_file"] is not None and not isinstance(params["config_file"], str):
            ctx.problem(where, "config_file", "must be a file name")
        params["timeout"] = _number_field(
            ctx, body, "timeout", where, parse_duration(defaults.get("timeout", 3600.0)), duration=True, minimum=1
        )
        modules = _modules_field(ctx, body, where) or ()
    elif kind == StepKind.PROMPT:
        msg = body.get("message")
        if not isinstance(msg, str) or not msg.strip():
            ctx.problem(where, "message", "missing: the text the operator acknowledges")
        params["message"] = msg
    if len(ctx.problems) > before:
        return None
    return {"params": params, "modules": modules}


def _valid_sensor(sensor: str, ctx: _Ctx) -> bool:
    if sensor in ("bath", "external"):
        return True
    kind, _, name = sensor.partition(":")
    if kind == "env":
        return bool(_NAME.match(name))
    if kind == "module":
        return name in ctx.modules and ctx.settings.modules[name].temp_sensor is not None
    return False


def _check_power_sequence(ctx: _Ctx) -> None:
    """Follow LV/HV of every module through the expanded steps (all off at the start)."""
    lv = dict.fromkeys(ctx.modules, False)
    hv = dict.fromkeys(ctx.modules, False)
    for s in ctx.steps:
        kind, action, mods = s["kind"], s["params"].get("action"), s["modules"]
        where = s["where"]
        if kind == StepKind.POWER:
            if action == PowerAction.HV_ON:
                bad = [m for m in mods if not lv[m]]
                if bad:
                    ctx.problem(where, "action", f"HV on where LV is off ({', '.join(bad)}): switch LV on first")
                for m in mods:
                    hv[m] = True
            elif action == PowerAction.LV_OFF:
                bad = [m for m in mods if hv[m]]
                if bad:
                    ctx.problem(where, "action", f"LV off before HV off ({', '.join(bad)}): switch HV off first")
                for m in mods:
                    lv[m] = hv[m] = False  # reported once, not again in every later repeat
            elif action == PowerAction.LV_ON:
                for m in mods:
                    lv[m] = True
            elif action == PowerAction.HV_OFF:
                for m in mods:
                    hv[m] = False
        elif kind == StepKind.IV_SCAN:
            no_lv = [m for m in mods if not lv[m]]
            hv_on = [m for m in mods if hv[m]]
            if no_lv:
                ctx.problem(where, "modules", f"IV scan where LV is off ({', '.join(no_lv)}): switch LV on first")
            if hv_on:
                ctx.problem(
                    where,
                    "modules",
                    f"IV scan where HV is on ({', '.join(hv_on)}): switch HV off first (the scan starts from 0 V)",
                )
        elif kind == StepKind.CALIBRATION:
            no_lv = [m for m in mods if not lv[m]]
            if no_lv:
                ctx.problem(where, "modules", f"calibration where LV is off ({', '.join(no_lv)})")
        if len(ctx.problems) >= 20:
            return


def _finish(ctx: _Ctx) -> tuple[Step, ...]:
    """Number the steps, assign thermal cycles and duration estimates."""
    est = ctx.settings.estimates
    temp = est.start_temperature
    last_target: float | None = None
    cycle = 0
    out: list[Step] = []
    for i, s in enumerate(ctx.steps):
        kind: StepKind = s["kind"]
        p = s["params"]
        if kind == StepKind.TEMPERATURE:
            if last_target is not None and p["target"] < last_target - 1e-9:
                cycle += 1
            last_target = p["target"]
            seconds = abs(p["target"] - temp) / est.chiller_k_per_min * 60.0 + p["stable_for"]
            temp = p["target"]
        elif kind == StepKind.POWER:
            hv = p["action"] in (PowerAction.HV_ON, PowerAction.HV_OFF)
            seconds = est.hv_bias_v / est.hv_ramp_v_per_s if hv else est.lv_s
        elif kind == StepKind.CHILLER:
            seconds = est.chiller_s
        elif kind == StepKind.WAIT:
            seconds = p["duration"]
        elif kind == StepKind.IV_SCAN:
            seconds = p["profile"].physical_s()
        elif kind == StepKind.CALIBRATION:
            seconds = est.calibration_s.get(p["calibration"], est.calibration_default_s)
        else:
            seconds = 0.0
        out.append(
            Step(
                index=i,
                kind=kind,
                name=s["name"],
                where=s["where"],
                params=p,
                modules=tuple(s["modules"]),
                cycle=cycle,
                estimate_s=seconds,
            )
        )
    return tuple(out)
