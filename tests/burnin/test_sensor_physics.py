"""The simulated sensor leaks like a silicon sensor: sqrt(V) rise, plateau, breakdown, x2 per ~7 K."""

from __future__ import annotations

import math

from caen_sim.sensor_physics import SensorParams, follow, leakage_ua, temperature_factor


def test_current_rises_like_sqrt_v_below_depletion_then_flattens():
    p = SensorParams(v_depletion=400.0)
    assert leakage_ua(100, 20, p) / leakage_ua(25, 20, p) == pytest_approx(2.0)
    assert leakage_ua(800, 20, p) / leakage_ua(400, 20, p) < 1.1
    assert leakage_ua(0, 20, p) == 0.0


def test_breakdown_is_a_steep_rise_above_the_configured_voltage():
    p = SensorParams(breakdown_v=500.0)
    below = leakage_ua(480, 20, p) / leakage_ua(460, 20, p)
    above = leakage_ua(540, 20, p) / leakage_ua(520, 20, p)
    assert below < 1.01 and above > 10
    # the sequencer's breakdown test (d ln I / d ln V above 5) fires there and not on the plateau
    assert math.log(above) / math.log(540 / 520) > 5 > math.log(below) / math.log(480 / 460)


def test_current_doubles_about_every_7_k_and_is_300_times_lower_at_minus_33():
    assert 1.8 < temperature_factor(27.0) < 2.2
    assert 200 < 1 / temperature_factor(-33.0) < 450


def test_module_temperature_follows_with_a_time_constant():
    t = 20.0
    for _ in range(60):
        t = follow(t, -30.0, 1.0, 60.0)
    assert -30.0 < t < -10.0  # after one time constant ~63 % of the way
    assert abs(t - (20 - 50 * (1 - math.exp(-1)))) < 0.01


def pytest_approx(x: float):
    import pytest

    return pytest.approx(x, rel=1e-9)
