"""The simulated box air dries under dry air (so a cold step can be seen held until it is dry), carriers follow
the chiller, and dcs-sim hands one time scale to every simulator and to the sequencer."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
import yaml
from env_sim.sensors import DryAir, follow

from burnin.world import dew_point
from trackerdcs_devstack.simstack import scaled_julabo_config


@pytest.mark.fast
def test_under_dry_air_the_humidity_falls_until_a_minus_39_c_setpoint_is_allowed():
    air = DryAir(start=40.0, floor=0.2, tau_s=900.0)
    assert air.humidity(0) == 40.0
    assert air.humidity(900) == pytest.approx(0.2 + 39.8 / math.e)
    # the burn-in's gate: no setpoint below dew point + 5 K; the standard cold plateau wants -39 C
    allowed = [t for t in range(0, 20000, 60) if dew_point(20.0, air.humidity(t)) + 5.0 <= -39.0]
    assert allowed and 3000 < allowed[0] < 8000  # wet at first, dry after about an hour
    assert dew_point(20.0, air.humidity(1e6)) == pytest.approx(dew_point(20.0, 0.2))


@pytest.mark.fast
def test_without_dry_air_the_humidity_stays():
    air = DryAir(start=40.0, floor=0.2, tau_s=900.0, flowing=False)
    assert air.humidity(0) == air.humidity(1e5) == 40.0


@pytest.mark.fast
def test_a_carrier_follows_the_bath_with_its_time_constant():
    t = 20.0
    for _ in range(120):
        t = follow(t, -35.0, 1.0, 120.0)
    assert t == pytest.approx(-35 + 55 / math.e, abs=0.01)


@pytest.mark.fast
def test_a_time_scaled_chiller_answers_as_much_faster(tmp_path: Path):
    source = tmp_path / "julabo.yml"
    source.write_text(
        "mqtt: {username: julabo}\n"
        "julabo:\n  connection: ${JULABO_CONNECTION:-/dev/ttyUSB0}\n  pacing_s: 0.27\n  poll_interval_s: 1.0\n"
    )
    assert scaled_julabo_config(source, tmp_path / "out.yml", 1.0) == source
    out = yaml.safe_load(scaled_julabo_config(source, tmp_path / "out.yml", 10.0).read_text())
    assert out["julabo"]["pacing_s"] == pytest.approx(0.027) and out["julabo"]["poll_interval_s"] == 0.1
    assert out["julabo"]["connection"] == "${JULABO_CONNECTION:-/dev/ttyUSB0}"  # still set by dcs-sim's env
    fast = yaml.safe_load(scaled_julabo_config(source, tmp_path / "out.yml", 1000.0).read_text())
    assert fast["julabo"]["pacing_s"] == 0.01 and fast["julabo"]["poll_interval_s"] == 0.05  # floors


def test_dcs_sim_hands_the_time_scale_to_every_simulator_and_the_sequencer(tmp_path: Path):
    from trackerdcs_devstack import simstack

    class Broker:
        port = 1

        def env(self, user: str) -> dict[str, str]:
            return {}

    args = argparse.Namespace(
        time_scale=300.0, chiller_time_scale=None, run_seconds=20.0, node_red=False, node_red_port=1,
        caen_config=str(simstack.REPO / "services/caen-fsm/example.yml"),
        caen_sim_config=str(simstack.REPO / "services/caen-fsm/caen-sim.yml"),
        julabo_config=str(simstack.REPO / "services/julabo-fsm/sim.yml"),
        burnin_config=str(simstack.REPO / "services/burnin/sim.yml"), burnin=True, humidity=30.0, dry_air=False,
    )  # fmt: skip
    specs = {s.name: s for s in simstack.build_specs(args, tmp_path, Broker(), None)}
    for name in ("caen-sim", "julabo-sim", "envsim"):
        argv = specs[name].argv
        assert argv[argv.index("--time-scale") + 1] == "300.0", name
    assert "--sim-config" in specs["caen-sim"].argv and "--julabo-control" in specs["caen-sim"].argv
    assert "--no-dry-air" in specs["envsim"].argv and "30" in specs["envsim"].argv
    assert specs["burnin"].env["BURNIN_TIME_SCALE"] == "300.0"
    assert float(specs["ph2acf-sim"].env["PH2ACF_SIM_DURATION"]) == pytest.approx(20.0 / 300)
    julabo_cfg = Path(specs["julabo-fsm"].argv[-1])
    assert yaml.safe_load(julabo_cfg.read_text())["julabo"]["limits"]["setpoint_min"] == -40.0


@pytest.mark.fast
def test_a_carrier_settles_about_2_k_above_a_cold_bath_as_the_standard_recipes_hold_offset_expects():
    from env_sim.sensors import carrier_target

    assert carrier_target(-36.0, 20.0, 0.96) == pytest.approx(-33.76)  # within 1 K of the -34 C plateau
    assert carrier_target(22.0, 20.0, 0.96) == pytest.approx(21.92)  # warm plateau: hold offset 0
    assert carrier_target(None, 20.0, 0.96) == 20.0
