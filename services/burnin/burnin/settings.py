"""The burn-in service's configuration: the stand (modules, limits) and where things live (pure, no I/O).

The recipe validator needs the stand to check a recipe before anything moves: which modules exist, the HV
limit of each module's channel (keep it equal to or below caen-fsm's ``limits`` for that channel), the
chiller setpoint limits, the dew-point margin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trackerdcs.config import ConfigError


@dataclass(frozen=True)
class ModuleSpec:
    """One module on the stand as the sequencer sees it."""

    name: str
    hv_limit_v: float = 600.0  #: largest |bias| the module's HV channel may be set to (caen-fsm limit)
    compliance_ua: float = 10.0  #: IV scans stop this module when |IMon| reaches this (uA)
    temp_sensor: str | None = None  #: sensor reference giving this module's temperature (see SENSOR_HELP)
    bias_v: float | None = None  #: operating V0Set restored after an IV scan (None: the V0Set read before it)


@dataclass(frozen=True)
class Limits:
    """Static limits checked when a recipe is validated and again before every command."""

    setpoint_min: float = -40.0  #: chiller setpoint range, degC
    setpoint_max: float = 40.0
    target_min: float = -36.0  #: measured (carrier) target range, degC
    target_max: float = 30.0
    dewpoint_margin_k: float = 5.0  #: no chiller setpoint below dew point + this
    hv_polarity: int = -1  #: recipe voltages carry this sign; the crate's V0Set is the magnitude


@dataclass(frozen=True)
class Estimates:
    """Figures used only to estimate durations in ``plan`` (and the ETA)."""

    chiller_k_per_min: float = 1.0
    lv_s: float = 10.0
    hv_ramp_v_per_s: float = 10.0
    hv_bias_v: float = 300.0
    chiller_s: float = 10.0
    calibration_s: Mapping[str, float] = field(default_factory=dict)
    calibration_default_s: float = 600.0
    start_temperature: float = 20.0


SENSOR_HELP = "bath, external (the chiller's Pt100), env:<name> (an env/<name> sensor) or module:<name>"


@dataclass(frozen=True)
class Roots:
    """MQTT topic roots of the services the sequencer drives or watches."""

    caen: str = "caen"
    julabo: str = "julabo"
    ph2acf: str = "ph2acf"
    env: str = "env"
    interlock: str = "interlock"


@dataclass(frozen=True)
class BurninSettings:
    """Everything in the service's YAML except ``mqtt:``."""

    modules: Mapping[str, ModuleSpec]
    limits: Limits = Limits()
    estimates: Estimates = Estimates()
    roots: Roots = Roots()
    root: str = "burnin"
    stand: str = "stand"
    humidity_sensors: tuple[str, ...] = ("box",)  #: env sensors whose dew point gates cold setpoints
    safe_temperature: float = 20.0  #: chiller setpoint on abort
    stale_s: float = 75.0  #: a status older than this (wall-clock seconds) is stale
    require_interlock: bool = True  #: False only on stands without Node-RED interlocks (logged loudly)
    retries: int = 3  #: tries of a device command before the burn-in aborts
    retry_interval_s: float = 10.0
    setpoint_step_k: float = 0.5  #: a staged cold setpoint is lowered only by at least this much
    state_dir: Path = Path("var/burnin/state")
    archive_dir: Path = Path("var/burnin/archive")
    spool_dir: Path = Path("var/burnin/spool")
    recipes_dir: Path = Path("services/burnin/recipes")
    mongo_uri: str | None = None
    mongo_database: str = "trackerdcs"
    time_scale: float = 1.0  #: >1 runs the sequencer's clock faster (simulation only)


def _number(raw: Mapping[str, Any], key: str, default: float, where: str, minimum: float | None = None) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}.{key} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where}.{key}={value} is below {minimum}")
    return float(value)


def _mapping(raw: Any, where: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    return raw


def _known(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(str, unknown))} (known: {', '.join(sorted(allowed))})"
        )


def parse_settings(raw: Mapping[str, Any]) -> BurninSettings:
    """Build :class:`BurninSettings` from the YAML mapping; ConfigError names the offending entry."""
    _known(
        raw,
        {
            "mqtt",
            "modules",
            "limits",
            "estimates",
            "roots",
            "root",
            "stand",
            "humidity_sensors",
            "safe_temperature",
            "stale_s",
            "require_interlock",
            "retries",
            "retry_interval_s",
            "setpoint_step_k",
            "state_dir",
            "archive_dir",
            "spool_dir",
            "recipes_dir",
            "mongo",
            "time_scale",
        },
        "config",
    )
    mods_raw = raw.get("modules")
    if isinstance(mods_raw, list):
        mods_raw = {str(m): {} for m in mods_raw}
    mods_raw = _mapping(mods_raw, "modules")
    if not mods_raw:
        raise ConfigError("modules: at least one module is needed")
    modules: dict[str, ModuleSpec] = {}
    for name, spec in mods_raw.items():
        where = f"modules.{name}"
        spec = _mapping(spec, where)
        _known(spec, {"hv_limit_v", "compliance_ua", "temp_sensor", "bias_v"}, where)
        sensor = spec.get("temp_sensor")
        if sensor is not None and not isinstance(sensor, str):
            raise ConfigError(f"{where}.temp_sensor must be a string ({SENSOR_HELP})")
        modules[str(name)] = ModuleSpec(
            str(name),
            hv_limit_v=_number(spec, "hv_limit_v", 600.0, where, 0.0),
            compliance_ua=_number(spec, "compliance_ua", 10.0, where, 0.0),
            temp_sensor=sensor,
            bias_v=_number(spec, "bias_v", 0.0, where, 0.0) if "bias_v" in spec else None,
        )
        if modules[str(name)].bias_v is not None and modules[str(name)].bias_v > modules[str(name)].hv_limit_v:
            raise ConfigError(f"{where}.bias_v is above its hv_limit_v")
    lim = _mapping(raw.get("limits"), "limits")
    _known(lim, {f.name for f in Limits.__dataclass_fields__.values()}, "limits")
    polarity = lim.get("hv_polarity", -1)
    if polarity not in (-1, 1):
        raise ConfigError(f"limits.hv_polarity must be -1 or 1, got {polarity!r}")
    limits = Limits(
        setpoint_min=_number(lim, "setpoint_min", -40.0, "limits"),
        setpoint_max=_number(lim, "setpoint_max", 40.0, "limits"),
        target_min=_number(lim, "target_min", -36.0, "limits"),
        target_max=_number(lim, "target_max", 30.0, "limits"),
        dewpoint_margin_k=_number(lim, "dewpoint_margin_k", 5.0, "limits", 0.0),
        hv_polarity=int(polarity),
    )
    if limits.setpoint_min >= limits.setpoint_max or limits.target_min >= limits.target_max:
        raise ConfigError("limits: each min must be below its max")
    est = _mapping(raw.get("estimates"), "estimates")
    _known(est, {f.name for f in Estimates.__dataclass_fields__.values()}, "estimates")
    cal = _mapping(est.get("calibration_s"), "estimates.calibration_s")
    estimates = Estimates(
        chiller_k_per_min=_number(est, "chiller_k_per_min", 1.0, "estimates", 1e-3),
        lv_s=_number(est, "lv_s", 10.0, "estimates", 0.0),
        hv_ramp_v_per_s=_number(est, "hv_ramp_v_per_s", 10.0, "estimates", 1e-3),
        hv_bias_v=_number(est, "hv_bias_v", 300.0, "estimates", 0.0),
        chiller_s=_number(est, "chiller_s", 10.0, "estimates", 0.0),
        calibration_s={str(k): _number(cal, k, 600.0, "estimates.calibration_s", 0.0) for k in cal},
        calibration_default_s=_number(est, "calibration_default_s", 600.0, "estimates", 0.0),
        start_temperature=_number(est, "start_temperature", 20.0, "estimates"),
    )
    roots_raw = _mapping(raw.get("roots"), "roots")
    _known(roots_raw, {f.name for f in Roots.__dataclass_fields__.values()}, "roots")
    roots = Roots(**{k: str(v) for k, v in roots_raw.items()})
    sensors = raw.get("humidity_sensors", ["box"])
    if isinstance(sensors, str):
        sensors = [sensors]
    if not isinstance(sensors, list) or not all(isinstance(s, str) for s in sensors):
        raise ConfigError("humidity_sensors must be a list of env sensor names")
    mongo = _mapping(raw.get("mongo"), "mongo")
    _known(mongo, {"uri", "database"}, "mongo")
    require = raw.get("require_interlock", True)
    if not isinstance(require, bool):
        raise ConfigError("require_interlock must be true or false")
    retries = raw.get("retries", 3)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
        raise ConfigError("retries must be an integer >= 1")
    return BurninSettings(
        modules=modules,
        limits=limits,
        estimates=estimates,
        roots=roots,
        root=str(raw.get("root", "burnin")),
        stand=str(raw.get("stand", "stand")),
        humidity_sensors=tuple(sensors),
        safe_temperature=_number(raw, "safe_temperature", 20.0, "config"),
        stale_s=_number(raw, "stale_s", 75.0, "config", 1.0),
        require_interlock=require,
        retries=retries,
        retry_interval_s=_number(raw, "retry_interval_s", 10.0, "config", 0.0),
        setpoint_step_k=_number(raw, "setpoint_step_k", 0.5, "config", 0.0),
        state_dir=Path(raw.get("state_dir", "var/burnin/state")),
        archive_dir=Path(raw.get("archive_dir", "var/burnin/archive")),
        spool_dir=Path(raw.get("spool_dir", "var/burnin/spool")),
        recipes_dir=Path(raw.get("recipes_dir", "services/burnin/recipes")),
        mongo_uri=mongo.get("uri") or None,
        mongo_database=str(mongo.get("database", "trackerdcs")),
        time_scale=_number(raw, "time_scale", 1.0, "config", 1e-3),
    )
