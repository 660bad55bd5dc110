"""The simulated sensor leaks like a silicon sensor: sqrt(V) rise, plateau, breakdown, x2 per ~7 K."""

from __future__ import annotations

import math
import re

import pytest
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


# ---------------------------------------------------------------- caen-sim --sim-config: the stand's physics


def test_the_sim_config_gives_each_hv_channel_its_sensor_with_per_channel_overrides():
    from caen_sim.model import Board, Crate
    from caen_sim.simconfig import parse_sim_config

    physics = parse_sim_config(
        {
            "temperature": {"initial": 18.0, "tau_s": 60},
            "sensor": {"i_ref_ua": 0.3, "v_depletion": 250, "breakdown_v": ".inf"},
            "channels": {"12:1": {"breakdown_v": 450}, "12:2": {"sensor": False}},
        }
    )
    crate = Crate("sim", [Board(0, "lv", 2), Board(12, "hv", 3)])
    crate.apply_physics(physics)
    hv0, hv1, hv2 = (crate.channels[(12, n)] for n in range(3))
    assert hv0.sensor.i_ref_ua == 0.3 and math.isinf(hv0.sensor.breakdown_v)
    assert hv1.sensor.breakdown_v == 450 and hv1.sensor.i_ref_ua == 0.3  # the override keeps the defaults
    assert hv2.sensor is None and crate.channels[(0, 0)].sensor is None  # a plain load; LV never has one
    assert hv0.sensor_temp == 18.0 and crate.module_tau_s == 60


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"sensor": {"i_ref": 1}}, "sensor: unknown key(s) i_ref"),
        ({"channels": {"12-1": {}}}, "channels.12-1: key must be 'slot:channel'"),
        ({"channels": {"12:1": {"breakdown_v": "high"}}}, "channels.12:1.breakdown_v must be a number"),
        ({"temperature": {"tau": 5}}, "temperature: unknown key(s) tau"),
        ({"sensor": {"v_depletion": 0}}, "sensor.v_depletion must be above 0"),
    ],
)
def test_a_bad_sim_config_is_refused_naming_the_entry(raw, named):
    from caen_sim.simconfig import SimConfigError, parse_sim_config

    with pytest.raises(SimConfigError, match=re.escape(named)):
        parse_sim_config(raw)


def test_modules_follow_the_chiller_bath_and_leak_less_when_cold():
    from caen_sim.model import Board, Crate
    from caen_sim.simconfig import parse_sim_config

    crate = Crate("sim", [Board(12, "hv", 1)])
    crate.apply_physics(parse_sim_config({"temperature": {"tau_s": 100}, "sensor": {"i_ref_ua": 1.0}}))
    ch = crate.channels[(12, 0)]
    ch.load, ch.I0Set, ch.RUp = -1.0, 100.0, 1000.0
    ch.write("V0Set", 300)
    ch.write("Pw", 1)
    crate.tick(1.0)
    warm = ch.IMon
    crate.bath_temp = -30.0
    crate.tick(100.0)  # one time constant: 63 % of the way from 20 to -30 C
    assert ch.sensor_temp == pytest.approx(20 - 50 * (1 - math.exp(-1)), abs=0.01)
    for _ in range(20):
        crate.tick(100.0)
    assert ch.sensor_temp == pytest.approx(-30.0, abs=0.1)
    assert warm / ch.IMon == pytest.approx(1 / temperature_factor(-30.0), rel=0.02)  # ~150 times less


def test_without_a_chiller_reading_the_modules_keep_their_temperature():
    from caen_sim.model import Board, Crate

    crate = Crate("sim", [Board(12, "hv", 1)])
    crate.channels[(12, 0)].sensor_temp = 20.0
    crate.tick(1000.0)
    assert crate.channels[(12, 0)].sensor_temp == 20.0


def test_the_crate_knows_when_the_next_ramp_ends_so_the_ioc_steps_there():
    from caen_sim.model import Board, Crate

    crate = Crate("sim", [Board(12, "hv", 2)])
    assert math.isinf(crate.next_event_s())  # nothing ramps: the coarse tick is enough
    a, b = crate.channels[(12, 0)], crate.channels[(12, 1)]
    a.RUp, b.RUp = 10.0, 10.0
    a.write("V0Set", 20.0)
    b.write("V0Set", 50.0)
    a.write("Pw", 1)
    b.write("Pw", 1)
    assert crate.next_event_s() == pytest.approx(2.0)  # 20 V at 10 V/s
    crate.tick(crate.next_event_s())
    assert a.VMon == pytest.approx(20.0, abs=0.01) and crate.next_event_s() == pytest.approx(3.0)


def test_the_bath_temperature_is_read_from_the_chiller_simulators_state_line():
    from caen_sim.simconfig import bath_from_state

    assert bath_from_state('{"bath_temp": -12.5, "running": true}') == -12.5
    assert bath_from_state("ERR unknown control command") is None
    assert bath_from_state('{"bath_temp": null}') is None
