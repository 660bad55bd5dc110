"""The caen-fsm configuration: crate, channels, modules, settings, limits and deadbands (pure, no I/O).

Two channel-list shapes of the 2020 prototype are accepted, plus our additions::

    system: cleanroom              # crate SysName, the PV prefix
    flavour: trackerdcs            # which IOC serves the crate: a shipped flavour or a mapping (caen_fsm.flavour)
    channels:                      # prototype shape 1: id -> LV/HV pair with per-channel settings
      "0": {module: M0, lv: {board: 0, chan: 0, setV: 13.}, hv: {board: 12, chan: 0}}
    # or prototype shape 2: [{module: M0, lv: [0, 0], hv: [12, 0]}, ...]
    global: {lv: {setV: 12., maxI: 2.5}, hv: {setV: 200., rampUpSpeed: 50.}}
    limits: {lv: {V0Set: 14}, hv: {V0Set: {max: 600}}, channels: {M0_hv: {V0Set: 350}}}
    deadbands: {vmon: {abs: 0.05}, imon: {abs: 0.001}}
    service: {hv_safe_voltage: 10, lv_off_timeout_s: 900}
    interlock: {required: true, stale_s: 90, on_silent: hv_off}   # the permit (see caen_fsm.permit)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from trackerdcs.config import ConfigError
from trackerdcs.configmodel import ConfigModel, MqttSection, validate
from trackerdcs.deadband import Deadband

from .flavour import Flavour, load_flavour
from .permit import InterlockSettings
from .pvnames import PARAMS, SETTABLE, canonical_param
from .states import Kind

DEFAULT_SYSTEM = "cleanroom"
_NAME_OK = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_NON_NEGATIVE = {
    "V0Set",
    "I0Set",
    "Trip",
    "RUp",
    "RDWn",
    "RUpTime",
    "RDwTime",
    "UNVThr",
    "OVVThr",
    "TripInt",
    "TripExt",
}

DEFAULT_DEADBANDS: dict[str, Deadband] = {
    "vmon": Deadband(absolute=0.05),
    "imon": Deadband(absolute=0.0005),
    "lv_vmon": Deadband(absolute=0.05),
    "lv_imon": Deadband(absolute=0.0005),
    "hv_vmon": Deadband(absolute=0.05),
    "hv_imon": Deadband(absolute=0.0005),
}


@dataclass(frozen=True)
class Limit:
    """Allowed range of one parameter (inclusive; None = unbounded)."""

    minimum: float | None = None
    maximum: float | None = None


@dataclass
class ChannelConfig:
    """One configured channel."""

    name: str
    kind: Kind
    slot: int
    channel: int
    module: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, Limit] = field(default_factory=dict)
    #: -1 on a board whose IOC takes the ``signed`` parameters negative (the flavour's sign convention)
    polarity: int = 1
    signed: frozenset[str] = frozenset()
    absent: frozenset[str] = frozenset()  # parameters the IOC does not have

    def check(self, param: str, value: Any) -> float | int | str:
        """Return ``value`` coerced for ``param`` of this channel, or raise ValueError with an operator message."""
        canonical = canonical_param(param, self.kind)
        if canonical is None or canonical not in SETTABLE[self.kind] or canonical in self.absent:
            allowed = ", ".join(p for p in SETTABLE[self.kind] if p not in self.absent)
            raise ValueError(
                f"{self.name}: '{param}' is not a settable {self.kind.value} parameter (one of: {allowed})"
            )
        spec = PARAMS[self.kind][canonical]
        if spec.enum is not None:
            # a label, never an index: the index order is the IOC's, learnt when the PV connects
            if isinstance(value, str):
                for label in spec.enum:
                    if label.lower() == value.lower():
                        return label
            raise ValueError(
                f"{self.name}: {canonical} must be one of the labels {', '.join(spec.enum)}, got {value!r}"
            )
        number = _number(value, integer=spec.integer)
        if number is None:
            kind = "an integer (or 0b/0x string)" if spec.integer else "a finite number"
            raise ValueError(f"{self.name}: {canonical} must be {kind}, got {value!r}")
        if canonical in self.signed and number < 0:
            # a signed setpoint: limits are on the magnitude; negative only where the board is negative
            if self.polarity > 0:
                raise ValueError(f"{self.name}: {canonical}={number} is negative on a positive board")
            number = -number
        limit = self.limits.get(canonical, Limit())
        if limit.minimum is not None and number < limit.minimum:
            raise ValueError(f"{self.name}: {canonical}={number} is below the configured minimum {limit.minimum}")
        if limit.maximum is not None and number > limit.maximum:
            raise ValueError(f"{self.name}: {canonical}={number} is above the configured limit {limit.maximum}")
        if spec.minimum is not None and number < spec.minimum:
            raise ValueError(f"{self.name}: {canonical}={number} is below the physical minimum {spec.minimum}")
        if spec.maximum is not None and number > spec.maximum:
            raise ValueError(f"{self.name}: {canonical}={number} is above the physical maximum {spec.maximum}")
        return number


@dataclass
class ModuleConfig:
    """A tracker module: one LV and one HV channel."""

    name: str
    lv: str
    hv: str


@dataclass
class CaenConfig:
    """Everything caen-fsm needs to know about the crate."""

    system: str
    root: str
    channels: dict[str, ChannelConfig]
    modules: dict[str, ModuleConfig]
    deadbands: dict[str, Deadband]
    heartbeat_s: float = 30.0
    connect_timeout_s: float = 5.0
    hv_safe_voltage: float = 10.0
    lv_off_timeout_s: float = 900.0
    apply_settings_on_switch_on: bool = True
    interlock: InterlockSettings = field(default_factory=InterlockSettings)
    flavour: Flavour = field(default_factory=load_flavour)

    def channel_by_address(self) -> dict[tuple[int, int], ChannelConfig]:
        return {(c.slot, c.channel): c for c in self.channels.values()}


# ---------------------------------------------------------------------------------------------------- the file
# The YAML as typed models (strict types, unknown keys refused): see trackerdcs.configmodel. Channel entries and
# device settings are checked below against the PV parameter table (the same check as MQTT commands).


def _topic(value: str) -> str:
    if not value or any(c in value for c in "#+"):
        raise ValueError(f"a topic name without wildcards, got {value!r}")
    return value


def _topic_or_empty(value: str | None) -> str:
    if value and any(c in value for c in "#+"):
        raise ValueError(f"a topic name without wildcards or empty, got {value!r}")
    return value or ""


Topic = Annotated[str, AfterValidator(_topic)]
Address = Annotated[list[int], Field(min_length=2, max_length=2)] | dict[str, Any]


class LimitRange(ConfigModel):
    """``{min:, max:}``: an allowed range (inclusive; either bound may be left out)."""

    min: float | None = None
    max: float | None = None


ParamLimits = dict[str, float | LimitRange]


class LimitsSection(ConfigModel):
    """``limits:``: per kind ``{param: max}`` or ``{param: {min:, max:}}``, narrowed per channel name."""

    lv: ParamLimits | None = None
    hv: ParamLimits | None = None
    channels: dict[str, ParamLimits] | None = None


class GlobalSection(ConfigModel):
    """``global:``: settings every LV / HV channel gets (a channel's own settings win)."""

    lv: dict[str, Any] | None = None
    hv: dict[str, Any] | None = None


class DeadbandSpec(ConfigModel):
    """``{abs:, rel:}``: republish a reading when it moved by more than abs or rel x value."""

    abs: float = Field(0.0, ge=0)
    rel: float = Field(0.0, ge=0)


DeadbandEntry = Annotated[float, Field(ge=0)] | Annotated[list[float], Field(min_length=2, max_length=2)] | DeadbandSpec


class ServiceSection(ConfigModel):
    """``service:``: the service's own timing and behaviour."""

    heartbeat_s: float = Field(30.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    hv_safe_voltage: float = Field(10.0, ge=0)
    lv_off_timeout_s: float = Field(900.0, gt=0)
    apply_settings_on_switch_on: bool = True


class InterlockSection(ConfigModel):
    """``interlock:``: the permit caen-fsm follows (see caen_fsm.permit)."""

    required: bool = True
    status_topic: Topic = InterlockSettings.status_topic
    availability_topic: Topic = InterlockSettings.availability_topic
    stale_s: float = Field(InterlockSettings.stale_s, gt=0)
    on_silent: Literal["hv_off", "alarm"] = "hv_off"
    resend_s: float = Field(InterlockSettings.resend_s, gt=0)
    chiller_topic: Annotated[str | None, AfterValidator(_topic_or_empty)] = InterlockSettings.chiller_topic


class CaenFile(ConfigModel):
    """The caen-fsm configuration file."""

    mqtt: MqttSection = MqttSection()
    system: str | None = None
    sysname: str | None = None
    root: str = "caen"
    flavour: str | dict[str, Any] | None = None
    channels: dict[str | int, dict[str, Any]] | list[dict[str, Any]]
    global_: GlobalSection = Field(GlobalSection(), alias="global")
    limits: LimitsSection = LimitsSection()
    deadbands: dict[str, DeadbandEntry] | None = None
    service: ServiceSection = ServiceSection()
    interlock: InterlockSection = InterlockSection()


def _number(value: Any, integer: bool = False) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip().lower().replace("_", "")
        try:
            value = int(text, 0) if text.startswith(("0b", "0x", "0o")) else float(text)
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if integer:
        if float(value) != int(value):
            return None
        return int(value)
    return float(value)


def _address(entry: Any, where: str) -> tuple[int, int, dict[str, Any]]:
    """(slot, channel, settings) from ``[slot, ch]`` or ``{board|slot, chan|channel, ...settings}``."""
    if isinstance(entry, (list, tuple)) and len(entry) == 2:
        slot, chan, rest = entry[0], entry[1], {}
    elif isinstance(entry, Mapping):
        rest = dict(entry)
        slot = rest.pop("board", rest.pop("slot", None))
        chan = rest.pop("chan", rest.pop("channel", None))
    else:
        raise ConfigError(f"{where}: expected [slot, channel] or a mapping with board/chan, got {entry!r}")
    if not isinstance(slot, int) or not isinstance(chan, int) or isinstance(slot, bool) or isinstance(chan, bool):
        raise ConfigError(f"{where}: slot and channel must be integers (got {slot!r}, {chan!r})")
    if not (0 <= slot <= 99 and 0 <= chan <= 999):
        raise ConfigError(f"{where}: slot {slot} / channel {chan} out of range")
    return slot, chan, rest


def _limits(raw: Mapping[str, float | LimitRange] | None) -> dict[str, Limit]:
    """Per-kind or per-channel limits (already typed by :class:`LimitsSection`) as :class:`Limit` objects."""
    out: dict[str, Limit] = {}
    for param, value in (raw or {}).items():
        if isinstance(value, LimitRange):
            out[str(param)] = Limit(value.min, value.max)
        else:
            out[str(param)] = Limit(None, float(value))
    return out


def _resolve_limits(kind: Kind, raw: Mapping[str, Limit], where: str) -> dict[str, Limit]:
    resolved = {}
    for param, limit in raw.items():
        canonical = canonical_param(param, kind)
        if canonical is None:
            raise ConfigError(f"{where}: unknown {kind.value} parameter '{param}'")
        resolved[canonical] = limit
    return resolved


def _overlay(base: dict[str, Limit], more: Mapping[str, Limit]) -> None:
    """Narrow ``base`` with ``more``: bounds given in ``more`` replace those of ``base``, others are kept."""
    for param, limit in more.items():
        old = base.get(param, Limit())
        base[param] = Limit(
            old.minimum if limit.minimum is None else limit.minimum,
            old.maximum if limit.maximum is None else limit.maximum,
        )


def _deadbands(raw: Mapping[str, float | list[float] | DeadbandSpec] | None) -> dict[str, Deadband]:
    out = dict(DEFAULT_DEADBANDS)
    for name, value in (raw or {}).items():
        if isinstance(value, DeadbandSpec):
            out[str(name)] = Deadband(value.abs, value.rel)
        elif isinstance(value, list):
            out[str(name)] = Deadband(float(value[0]), float(value[1]))
        else:
            out[str(name)] = Deadband(float(value), 0.0)
    return out


def _interlock(raw: InterlockSection) -> InterlockSettings:
    """``interlock:`` -> :class:`InterlockSettings` (absent: required, defaults)."""
    return InterlockSettings(**raw.model_dump())


def parse_config(cfg: Mapping[str, Any]) -> CaenConfig:
    """Validate a loaded YAML mapping into a :class:`CaenConfig`; raise ConfigError with the location.

    The file's layout and types are checked by :class:`CaenFile` (strict, unknown keys refused); the channels and
    their device settings then against the PV parameter table."""
    if not cfg.get("channels"):
        raise ConfigError("channels: at least one channel or module must be configured")
    file = validate(CaenFile, cfg)
    system = file.system or file.sysname or DEFAULT_SYSTEM
    if not _NAME_OK.match(system):
        raise ConfigError(f"system: invalid crate name {system!r}")
    root = file.root
    raw_channels = file.channels
    if isinstance(raw_channels, Mapping):
        entries = [(str(k), v) for k, v in raw_channels.items()]
    else:
        entries = [(str(i), v) for i, v in enumerate(raw_channels)]

    global_settings = {"lv": file.global_.lv or {}, "hv": file.global_.hv or {}}
    kind_limits = {
        kind: _resolve_limits(kind, _limits(getattr(file.limits, kind.value)), f"limits.{kind.value}") for kind in Kind
    }
    per_channel_limits = file.limits.channels or {}

    flavour = load_flavour(file.flavour)
    channels: dict[str, ChannelConfig] = {}
    modules: dict[str, ModuleConfig] = {}
    used: dict[tuple[int, int], str] = {}

    def add(name: str, kind: Kind, entry: Any, module: str | None, where: str) -> str:
        slot, chan, rest = _address(entry, where)
        name = str(rest.pop("name", name))
        if not _NAME_OK.match(name):
            raise ConfigError(f"{where}: channel name {name!r} must be 1-64 of A-Z a-z 0-9 _ . -")
        if name in channels:
            raise ConfigError(f"{where}: duplicate channel name {name!r}")
        if (slot, chan) in used:
            raise ConfigError(f"{where}: slot {slot} channel {chan} already used by {used[(slot, chan)]}")
        used[(slot, chan)] = name
        ch = ChannelConfig(name, kind, slot, chan, module, polarity=flavour.polarity(slot))
        ch.signed, ch.absent = flavour.signed, flavour.absent
        ch.limits = {p: Limit(minimum=0.0) for p in _NON_NEGATIVE if p in SETTABLE[kind]}
        _overlay(ch.limits, kind_limits[kind])
        own = per_channel_limits.get(name)
        if own is not None:
            _overlay(ch.limits, _resolve_limits(kind, _limits(own), f"limits.channels.{name}"))
        merged = {**(global_settings.get(kind.value) or {}), **rest}
        for key, value in merged.items():
            canonical = canonical_param(str(key), kind)
            if canonical is None:
                raise ConfigError(f"{where}: unknown {kind.value} setting '{key}'")
            try:
                ch.settings[canonical] = ch.check(canonical, value)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        channels[name] = ch
        return name

    for key, entry in entries:
        where = f"channels[{key}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: must be a mapping")
        if "kind" in entry:  # a lone channel, not part of a module
            try:
                kind = Kind(str(entry["kind"]).lower())
            except ValueError:
                raise ConfigError(f"{where}: kind must be lv or hv") from None
            rest = {k: v for k, v in entry.items() if k != "kind"}
            add(str(rest.get("name", f"ch{key}")), kind, rest, None, where)
            continue
        extra = sorted(set(entry) - {"module", "lv", "hv"})
        if extra:
            raise ConfigError(f"{where}.{extra[0]}: unknown key (known: module, lv, hv; or kind for a lone channel)")
        module = entry.get("module")
        if module is not None and (not isinstance(module, str) or not _NAME_OK.match(module)):
            raise ConfigError(f"{where}: module name {module!r} must be 1-64 of A-Z a-z 0-9 _ . -")
        if "lv" not in entry or "hv" not in entry:
            raise ConfigError(f"{where}: needs both 'lv' and 'hv' (or 'kind' for a lone channel)")
        base = module or f"ch{key}"
        lv = add(f"{base}_lv", Kind.LV, entry["lv"], module, f"{where}.lv")
        hv = add(f"{base}_hv", Kind.HV, entry["hv"], module, f"{where}.hv")
        if module is not None:
            if module in modules:
                raise ConfigError(f"{where}: duplicate module {module!r}")
            modules[module] = ModuleConfig(module, lv, hv)

    for name in per_channel_limits:
        if name not in channels:  # a misspelled channel name would leave its limit unapplied
            raise ConfigError(f"limits.channels.{name}: no such channel (known: {', '.join(channels)})")
    svc = file.service
    return CaenConfig(
        flavour=flavour,
        interlock=_interlock(file.interlock),
        system=system,
        root=root,
        channels=channels,
        modules=modules,
        deadbands=_deadbands(file.deadbands),
        heartbeat_s=svc.heartbeat_s,
        connect_timeout_s=svc.connect_timeout_s,
        hv_safe_voltage=svc.hv_safe_voltage,
        lv_off_timeout_s=svc.lv_off_timeout_s,
        apply_settings_on_switch_on=svc.apply_settings_on_switch_on,
    )
