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


def test_a_simulated_hv_channel_with_a_sensor_draws_its_leakage_and_breaks_down():
    from caen_sim.model import SimChannel

    ch = SimChannel("hv", load=-1.0, sensor=SensorParams(i_ref_ua=0.5, v_depletion=200.0, breakdown_v=300.0))
    ch.I0Set, ch.RUp, ch.Trip = 1000.0, 1000.0, 1000.0
    ch.write("Pw", 1)
    readings = {}
    for v in (50.0, 200.0, 280.0, 320.0):
        ch.write("V0Set", v)
        ch.tick(1.0)
        readings[v] = ch.IMon
    assert readings[200.0] / readings[50.0] == pytest_approx(2.0)
    assert readings[280.0] / readings[200.0] < 1.05 and readings[320.0] / readings[280.0] > 10
    ch.sensor_temp = -33.0
    ch.tick(0.1)
    assert ch.IMon < readings[320.0] / 200
