"""The burn-in service's configuration: the stand (modules, limits) and where things live (pure, no I/O).

The recipe validator needs the stand to check a recipe before anything moves: which modules exist, the HV
limit of each module's channel (keep it equal to or below caen-fsm's ``limits`` for that channel), the
chiller setpoint limits, the dew-point margin.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from trackerdcs.config import ConfigError
from trackerdcs.configmodel import ConfigModel, MqttSection, validate


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


# ---------------------------------------------------------------------------------------------------- the file
# The YAML as typed models (strict types, unknown keys refused, see trackerdcs.configmodel), one field per line.
_L, _E, _B = Limits(), Estimates(), Roots()


class ModuleSection(ConfigModel):
    """``modules.<name>``: one module on the stand."""

    hv_limit_v: float = Field(600.0, ge=0)
    compliance_ua: float = Field(10.0, ge=0)
    temp_sensor: str | None = Field(None, description=SENSOR_HELP)
    bias_v: float | None = Field(None, ge=0)


class LimitsSection(ConfigModel):
    """``limits:``: static limits checked when a recipe is validated and before every command."""

    setpoint_min: float = _L.setpoint_min
    setpoint_max: float = _L.setpoint_max
    target_min: float = _L.target_min
    target_max: float = _L.target_max
    dewpoint_margin_k: float = Field(_L.dewpoint_margin_k, ge=0)
    hv_polarity: Literal[-1, 1] = -1


class EstimatesSection(ConfigModel):
    """``estimates:``: figures used only to estimate durations (plan, ETA)."""

    chiller_k_per_min: float = Field(_E.chiller_k_per_min, ge=1e-3)
    lv_s: float = Field(_E.lv_s, ge=0)
    hv_ramp_v_per_s: float = Field(_E.hv_ramp_v_per_s, ge=1e-3)
    hv_bias_v: float = Field(_E.hv_bias_v, ge=0)
    chiller_s: float = Field(_E.chiller_s, ge=0)
    calibration_s: dict[str, Annotated[float, Field(ge=0)]] = {}
    calibration_default_s: float = Field(_E.calibration_default_s, ge=0)
    start_temperature: float = _E.start_temperature


class RootsSection(ConfigModel):
    """``roots:``: MQTT topic roots of the services the sequencer drives or watches."""

    caen: str = _B.caen
    julabo: str = _B.julabo
    ph2acf: str = _B.ph2acf
    env: str = _B.env
    interlock: str = _B.interlock


class MongoSection(ConfigModel):
    """``mongo:``: where burn-in records go besides the archive (no uri or an empty one: archive only)."""

    uri: str | None = None
    database: str = "trackerdcs"


class BurninFile(ConfigModel):
    """The burn-in service's configuration file."""

    mqtt: MqttSection = MqttSection()
    modules: list[str] | dict[str, ModuleSection | None]
    limits: LimitsSection = LimitsSection()
    estimates: EstimatesSection = EstimatesSection()
    roots: RootsSection = RootsSection()
    root: str = "burnin"
    stand: str = "stand"
    humidity_sensors: str | list[str] = ["box"]
    safe_temperature: float = 20.0
    stale_s: float = Field(75.0, ge=1)
    require_interlock: bool = True
    retries: int = Field(3, ge=1)
    retry_interval_s: float = Field(10.0, ge=0)
    setpoint_step_k: float = Field(0.5, ge=0)
    state_dir: str = "var/burnin/state"
    archive_dir: str = "var/burnin/archive"
    spool_dir: str = "var/burnin/spool"
    recipes_dir: str = "services/burnin/recipes"
    mongo: MongoSection = MongoSection()
    time_scale: float = Field(1.0, ge=1e-3)


def parse_settings(raw: Mapping[str, Any]) -> BurninSettings:
    """Build :class:`BurninSettings` from the YAML mapping (:class:`BurninFile`); ConfigError names the entry."""
    file = validate(BurninFile, raw)
    mods = {name: None for name in file.modules} if isinstance(file.modules, list) else file.modules
    if not mods:
        raise ConfigError("modules: at least one module is needed")
    modules: dict[str, ModuleSpec] = {}
    for name, spec in mods.items():
        spec = spec or ModuleSection()
        if spec.bias_v is not None and spec.bias_v > spec.hv_limit_v:
            raise ConfigError(f"modules.{name}.bias_v is above its hv_limit_v")
        modules[str(name)] = ModuleSpec(str(name), **spec.model_dump())
    limits = Limits(**file.limits.model_dump())
    if limits.setpoint_min >= limits.setpoint_max or limits.target_min >= limits.target_max:
        raise ConfigError("limits: each min must be below its max")
    sensors = file.humidity_sensors
    return BurninSettings(
        modules=modules,
        limits=limits,
        estimates=Estimates(**file.estimates.model_dump()),
        roots=Roots(**file.roots.model_dump()),
        root=file.root,
        stand=file.stand,
        humidity_sensors=(sensors,) if isinstance(sensors, str) else tuple(sensors),
        safe_temperature=file.safe_temperature,
        stale_s=file.stale_s,
        require_interlock=file.require_interlock,
        retries=file.retries,
        retry_interval_s=file.retry_interval_s,
        setpoint_step_k=file.setpoint_step_k,
        state_dir=Path(file.state_dir),
        archive_dir=Path(file.archive_dir),
        spool_dir=Path(file.spool_dir),
        recipes_dir=Path(file.recipes_dir),
        mongo_uri=file.mongo.uri or None,
        mongo_database=file.mongo.database,
        time_scale=file.time_scale,
    )
