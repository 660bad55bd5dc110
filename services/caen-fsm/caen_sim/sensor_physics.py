"""Leakage current of a silicon sensor for the simulated HV channels (pure functions, no I/O).

Facts the model follows (public sensor physics): below full depletion the bulk current grows about like the
square root of the bias (the depleted volume grows like sqrt(V)); above it the current flattens (a small
linear slope remains); at breakdown it rises steeply. The bulk generation current scales with temperature as
T^2 * exp(-E / 2kT) with E = 1.21 eV: about x2 per 7 K near room temperature, so a sensor at -33 C leaks some
300 times less than at +20 C. A module's temperature follows its carrier/chiller with a time constant.

Voltages are bias magnitudes (V), currents microamperes, temperatures degrees Celsius.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BOLTZMANN_EV_PER_K = 8.617333262e-5
EFFECTIVE_GAP_EV = 1.21
KELVIN = 273.15


@dataclass(frozen=True)
class SensorParams:
    """One sensor's leakage behaviour."""

    i_ref_ua: float = 0.5  #: current at full depletion and ``t_ref_c``
    t_ref_c: float = 20.0
    v_depletion: float = 250.0  #: full depletion voltage
    plateau_slope_per_v: float = 2e-4  #: relative rise per volt above depletion
    breakdown_v: float = math.inf  #: above this the current rises steeply
    breakdown_scale_v: float = 8.0  #: e-folding voltage of the breakdown rise
    max_ua: float = 1e4  #: the model saturates here (the channel's current limit acts first)


def temperature_factor(t_c: float, t_ref_c: float = 20.0) -> float:
    """I(T) / I(T_ref) for bulk generation current: (T/Tref)^2 * exp(-E/2k * (1/T - 1/Tref))."""
    t, tr = t_c + KELVIN, t_ref_c + KELVIN
    if t <= 0:
        return 0.0
    return (t / tr) ** 2 * math.exp(-EFFECTIVE_GAP_EV / (2 * BOLTZMANN_EV_PER_K) * (1.0 / t - 1.0 / tr))


def voltage_shape(v: float, p: SensorParams) -> float:
    """The bias dependence, 1 at full depletion: sqrt rise, plateau with a small slope, steep breakdown."""
    v = abs(v)
    if v <= 0:
        return 0.0
    shape = math.sqrt(v / p.v_depletion) if v < p.v_depletion else 1.0 + p.plateau_slope_per_v * (v - p.v_depletion)
    if v > p.breakdown_v:
        shape *= math.exp(min((v - p.breakdown_v) / p.breakdown_scale_v, 50.0))
    return shape


def leakage_ua(v: float, t_c: float, p: SensorParams) -> float:
    """Leakage current (uA) at bias ``v`` and sensor temperature ``t_c``."""
    return min(p.i_ref_ua * voltage_shape(v, p) * temperature_factor(t_c, p.t_ref_c), p.max_ua)


def follow(temperature: float, target: float, dt: float, tau_s: float) -> float:
    """One step of a first-order lag: a module's temperature following its chiller/carrier."""
    if tau_s <= 0:
        return target
    return temperature + (target - temperature) * (1.0 - math.exp(-dt / tau_s))
