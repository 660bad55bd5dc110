"""Recipes are validated before anything moves; every refusal names the step and the field."""

from __future__ import annotations

import pytest

from burnin.recipe import RecipeError, StepKind, load_recipe, parse_duration
from burnin.settings import parse_settings

from .conftest import RECIPES

STAND = parse_settings(
    {
        "modules": {
            "module_0": {"hv_limit_v": 800, "temp_sensor": "env:carrier0"},
            "module_1": {"hv_limit_v": 500},
        },
        "limits": {"setpoint_min": -40, "setpoint_max": 40, "target_min": -36, "target_max": 30},
    }
)


def refused(text: str, modules=None) -> list[str]:
    with pytest.raises(RecipeError) as exc:
        load_recipe(text, STAND, modules)
    return [str(p) for p in exc.value.problems]


def test_standard_burnin_expands_to_18_warm_and_17_cold_plateaus_with_iv_where_the_design_says():
    r = load_recipe((RECIPES / "standard-burnin.yml").read_text(), STAND, ["module_0"])
    temps = [s for s in r.steps if s.kind == StepKind.TEMPERATURE]
    assert [t.params["target"] > 0 for t in temps] == [i % 2 == 0 for i in range(35)]  # W C W C ... W
    holds = [s for s in r.steps if s.kind == StepKind.WAIT and s.params["duration"] == 600]
    assert len(holds) == 35
    # IV blocks: first warm (cycle 0), first cold (1), every 4th cold (4, 8, 12, 16), last warm (17)
    assert [s.cycle for s in r.steps if s.kind == StepKind.IV_SCAN] == [0, 1, 4, 8, 12, 16, 17]
    assert r.cycles == 17
    prof = r.profiles["standard"]
    assert prof.points[:3] == (0.0, -10.0, -20.0) and -200.0 in prof.points and prof.points[-1] == -800.0
    assert len(prof.points) == 21 + 30 and prof.settle_s == 1.0 and prof.ramp_v_per_s == 10.0
    assert len([s for s in r.steps if s.kind == StepKind.CALIBRATION]) == 9  # 7 quick + 2 full
    assert 30 * 3600 < r.estimate_s < 48 * 3600
    plan = r.plan_lines()
    assert plan[-1].startswith("estimated duration") and len(plan) == len(r.steps) + 2


def test_sim_short_recipe_is_valid_and_short():
    r = load_recipe((RECIPES / "sim-short.yml").read_text(), STAND)
    assert r.name == "sim-short" and r.estimate_s < 3600
    assert {s.kind for s in r.steps} >= {StepKind.IV_SCAN, StepKind.CALIBRATION, StepKind.TEMPERATURE}


def test_unknown_step_is_refused_naming_its_place():
    probs = refused("name: x\nsteps:\n  - wait: 1\n  - explode: {now: true, name: boom}\n")
    assert any(p.startswith("step 2") and "unknown step 'explode'" in p for p in probs), probs


def test_missing_field_names_step_and_field():
    probs = refused("name: x\nsteps:\n  - temperature: {sensor: bath, name: cool down}\n")
    assert probs == ["step 1 'cool down' (temperature): field 'target': missing (required)"]


def test_unknown_field_is_refused():
    probs = refused("name: x\nsteps:\n  - wait: {duration: 5, durration: 6}\n")
    assert "field 'durration': unknown field" in probs[0]


def test_setpoint_outside_limits_is_refused():
    probs = refused("name: x\nsteps:\n  - temperature: {target: -60, sensor: bath, name: too cold}\n")
    assert "step 1 'too cold' (temperature): field 'target': -60 C is outside the stand's limits" in probs[0]
    probs = refused("name: x\nsteps:\n  - temperature: {target: -35, sensor: bath, approach_offset: -10}\n")
    assert "field 'approach_offset'" in probs[0] and "-45" in probs[0]


def test_lv_off_before_hv_off_is_refused():
    text = """
name: x
steps:
  - power: lv_on
  - power: hv_on
  - repeat:
      times: 2
      steps:
        - wait: 1
        - power: {action: lv_off, name: early lv off}
"""
    probs = refused(text)
    assert probs == [
        "step 3 > repeat 1/2 > step 2 'early lv off' (power): field 'action': LV off before HV off "
        "(module_0, module_1): switch HV off first"
    ]


def test_hv_on_without_lv_is_refused():
    probs = refused("name: x\nsteps:\n  - power: {action: hv_on, modules: [module_1]}\n")
    assert "HV on where LV is off (module_1)" in probs[0]


def test_iv_beyond_the_channel_limit_is_refused_per_module():
    text = """
name: x
iv_profiles:
  deep: {segments: [{from: 0, to: -600, step: 50}]}
steps:
  - power: lv_on
  - iv_scan: {profile: deep, name: deep iv}
"""
    probs = refused(text)
    assert probs == [
        "step 2 'deep iv' (iv_scan): field 'profile': the scan goes to 600 V but module module_1's HV channel "
        "is limited to 500 V"
    ]
    load_recipe(text, STAND, ["module_0"])  # module_0 may go to 800 V


def test_iv_with_the_wrong_polarity_or_ragged_steps_is_refused():
    probs = refused("name: x\niv_profiles:\n  p: {segments: [{from: 0, to: 100, step: 10}]}\nsteps: [{wait: 1}]\n")
    assert "wrong sign" in probs[0]
    probs = refused("name: x\niv_profiles:\n  p: {segments: [{from: 0, to: -95, step: 10}]}\nsteps: [{wait: 1}]\n")
    assert "not a whole number" in probs[0]


def test_every_problem_is_reported_at_once_and_nothing_is_built():
    text = "name: x\nsteps:\n  - wait: soon\n  - calibration: {}\n  - prompt: ''\n  - power: {action: dance}\n"
    probs = refused(text)
    assert len(probs) == 4
    assert probs[0].startswith("step 1 (wait): field 'duration'")
    assert probs[1].startswith("step 2 (calibration): field 'calibration'")
    assert probs[2].startswith("step 3 (prompt): field 'message'")
    assert probs[3].startswith("step 4 (power): field 'action': unknown action 'dance'")


def test_modules_outside_the_burn_in_and_bad_yaml_are_refused():
    assert (
        "module_9 not in this burn-in" in refused("name: x\nsteps:\n  - power: {action: lv_on, modules: [module_9]}")[0]
    )
    assert "invalid YAML" in refused("name: x\nsteps: [wait: 1\n")[0]
    assert "unknown module 'nope'" in refused("name: x\nsteps: [{wait: 1}]\n", ["nope"])[0]
    assert "unknown block" in refused("name: x\nsteps: [{use: nothing}]\n")[0]


def test_chiller_stop_and_iv_with_hv_on_are_refused():
    text = (
        "name: x\nsteps:\n  - power: lv_on\n  - power: hv_on\n"
        "  - iv_scan: {profile: {segments: [{from: 0, to: -100, step: 50}]}}\n"
    )
    assert "IV scan where HV is on" in refused(text)[0]


def test_durations_accept_units():
    assert parse_duration("10m") == 600 and parse_duration("1.5h") == 5400 and parse_duration(90) == 90
    with pytest.raises(ValueError):
        parse_duration("-1")
