"""The simulator's physics configuration (``caen-sim --sim-config FILE``): what each HV channel's sensor leaks
and how the modules' temperature follows the chiller (pure: a mapping in, dataclasses out; no I/O).

::

    temperature:
      initial: 20.0          # degC of every module at start
      tau_s: 300.0           # module time constant towards the chiller's bath (simulated seconds)
      chiller_poll_s: 1.0    # how often the bath temperature is read from julabo-sim's control port (real s)
    sensor:                  # every HV channel (SensorParams fields); omit the section for a plain load
      i_ref_ua: 0.5          # leakage at full depletion and t_ref_c
      t_ref_c: 20.0
      v_depletion: 250.0
      plateau_slope_per_v: 2.0e-4
      breakdown_v: 900.0     # .inf for none
      breakdown_scale_v: 8.0
    channels:                # per channel "slot:channel": overrides of the sensor fields
      "12:1": {breakdown_v: 450}
      "12:2": {sensor: false}   # this channel has no sensor (plain load only)

A channel listed here must exist on the crate; unknown keys are refused with the key named.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .sensor_physics import SensorParams

SENSOR_FIELDS = {f.name for f in fields(SensorParams)}


class SimConfigError(ValueError):
    """A bad simulator physics configuration; the message names the entry."""


@dataclass(frozen=True)
class SimPhysics:
    """Per-channel sensors and the module temperature model."""

    sensors: Mapping[tuple[int, int], SensorParams] = field(default_factory=dict)
    default_sensor: SensorParams | None = None
    initial_temp_c: float = 20.0
    module_tau_s: float = 300.0
    chiller_poll_s: float = 1.0

    def sensor_for(self, slot: int, channel: int) -> SensorParams | None:
        """The sensor of HV channel (slot, channel): its own entry, else the default (None: no sensor)."""
        if (slot, channel) in self.sensors:
            return self.sensors[(slot, channel)]
        return self.default_sensor


def _num(raw: Mapping[str, Any], key: str, where: str, default: float, minimum: float | None = None) -> float:
    value = raw.get(key, default)
    if isinstance(value, str) and value.strip().lower() in (".inf", "inf"):
        value = math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise SimConfigError(f"{where}.{key} must be a number, got {value!r}")
    if minimum is not None and value < minimum:
        raise SimConfigError(f"{where}.{key}={value} is below {minimum}")
    return float(value)


def _mapping(raw: Any, where: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SimConfigError(f"{where} must be a mapping")
    return raw


def _unknown(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(map(str, set(raw) - allowed))
    if extra:
        raise SimConfigError(f"{where}: unknown key(s) {', '.join(extra)} (known: {', '.join(sorted(allowed))})")


def _sensor(raw: Mapping[str, Any], base: SensorParams, where: str) -> SensorParams:
    _unknown(raw, SENSOR_FIELDS, where)
    values = {k: _num(raw, k, where, getattr(base, k), 0.0) for k in raw}
    params = replace(base, **values)
    if params.v_depletion <= 0:
        raise SimConfigError(f"{where}.v_depletion must be above 0")
    return params


def parse_sim_config(raw: Mapping[str, Any] | None) -> SimPhysics:
    """:class:`SimPhysics` from the YAML mapping (None or empty: no sensors, default temperature model)."""
    raw = _mapping(raw, "sim config")
    _unknown(raw, {"temperature", "sensor", "channels"}, "sim config")
    temp = _mapping(raw.get("temperature"), "temperature")
    _unknown(temp, {"initial", "tau_s", "chiller_poll_s"}, "temperature")
    default = None
    if raw.get("sensor") is not None:
        default = _sensor(_mapping(raw["sensor"], "sensor"), SensorParams(), "sensor")
    sensors: dict[tuple[int, int], SensorParams] = {}
    chans = _mapping(raw.get("channels"), "channels")
    for key, spec in chans.items():
        where = f"channels.{key}"
        try:
            slot_s, _, chan_s = str(key).partition(":")
            address = (int(slot_s), int(chan_s))
        except ValueError:
            raise SimConfigError(f"{where}: key must be 'slot:channel', e.g. '12:0'") from None
        spec = _mapping(spec, where)
        if spec.get("sensor") is False:
            _unknown(spec, {"sensor"}, where)
            sensors[address] = None  # type: ignore[assignment]  # explicitly no sensor
            continue
        sensors[address] = _sensor(spec, default or SensorParams(), where)
    return SimPhysics(
        sensors=sensors,
        default_sensor=default,
        initial_temp_c=_num(temp, "initial", "temperature", 20.0),
        module_tau_s=_num(temp, "tau_s", "temperature", 300.0, 0.0),
        chiller_poll_s=_num(temp, "chiller_poll_s", "temperature", 1.0, 0.05),
    )


def bath_from_state(answer: str) -> float | None:
    """The bath temperature in julabo-sim's ``state`` answer (one JSON line); None if absent or unreadable."""
    try:
        doc = json.loads(answer)
    except ValueError:
        return None
    value = doc.get("bath_temp") if isinstance(doc, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
