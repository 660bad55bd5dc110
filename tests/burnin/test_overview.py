"""What the burn-in page is given: every step with its outcome, and each module's newest IV curve."""

from __future__ import annotations

from burnin.engine import Engine, State
from burnin.overview import iv_curve, newest_curves, step_overview
from burnin.recipe import load_recipe
from burnin.settings import parse_settings

from .stand import Stand, pump, run

SETTINGS = parse_settings({"modules": {"module_0": {"compliance_ua": 5}, "module_1": {"compliance_ua": 5}}})
RECIPE = """
name: t
defaults: {temperature: {sensor: bath, tolerance: 0.5, stable_for: 5, timeout: 1h}}
iv_profiles:
  p: {segments: [{from: 0, to: -100, step: 20}, {from: -100, to: -200, step: 25}], settle: 1, ramp: 50}
steps:
  - chiller: start
  - temperature: {target: 18, name: warm}
  - power: lv_on
  - iv_scan: {profile: p, name: iv}
  - power: hv_on
  - wait: {duration: 600, name: hold}
  - power: hv_off
  - power: lv_off
"""


def until_hold_step(stand: Stand) -> Engine:
    eng = Engine(SETTINGS)
    eng.start(load_recipe(RECIPE, SETTINGS), "bi-7", "alice", "", stand.now, stand.world())
    pump(eng, stand)
    run(eng, stand, 900, until=lambda: eng.status()["step_name"] == "hold")
    return eng


def overview(eng: Engine) -> dict:
    assert eng.recipe is not None
    return step_overview(eng.recipe, eng.history, eng.index, eng.state.value, eng.uid)


def test_every_step_is_listed_with_its_outcome_the_current_one_running_the_rest_pending():
    eng = until_hold_step(Stand())
    doc = overview(eng)
    assert doc["uid"] == "bi-7" and doc["recipe"] == "t" and doc["state"] == "RUNNING"
    assert [s["step"] for s in doc["steps"]] == list(range(1, 9))
    assert [s["outcome"] for s in doc["steps"]] == ["done"] * 5 + ["running", None, None]
    iv = doc["steps"][3]
    assert iv["name"] == "iv" and iv["kind"] == "iv_scan" and iv["tries"] == 1
    assert iv["end"] > iv["start"] and "module_0 done" in iv["detail"]
    assert doc["steps"][6]["start"] is None and doc["steps"][6]["tries"] == 0


def test_a_paused_step_shows_paused_and_a_skipped_one_skipped():
    stand = Stand()
    eng = until_hold_step(stand)
    eng.pause(stand.now, "alice")
    pump(eng, stand)
    assert eng.state == State.PAUSED
    assert overview(eng)["steps"][5]["outcome"] == "paused"
    eng.skip(stand.now, "bob")
    pump(eng, stand)
    steps = overview(eng)["steps"]
    assert steps[5]["outcome"] == "skipped" and "bob" in steps[5]["detail"]
    assert steps[6]["outcome"] == "paused", "the next step is where the burn-in stands"


def test_the_iv_curve_keeps_every_point_of_the_module_and_counts_steps_from_one():
    stand = Stand()
    stand.modules["module_1"].breakdown_v = 110.0
    eng = until_hold_step(stand)
    scan = eng.results["iv_scan"][0]
    curves = newest_curves([scan])
    assert set(curves) == {"module_0", "module_1"}
    c0 = curves["module_0"]
    assert c0["burnin"] == "bi-7" and c0["step"] == 4 and c0["profile"] == "p" and c0["outcome"] == "done"
    assert [p["set_v"] for p in c0["points"]] == [0, -20, -40, -60, -80, -100, -125, -150, -175, -200]
    kept = scan["modules"]["module_0"]["points"]
    assert [(p["vmon"], p["imon"]) for p in c0["points"]] == [(p["vmon"], p["imon"]) for p in kept]
    assert curves["module_1"]["outcome"] == "breakdown" and curves["module_1"]["points"][-1]["set_v"] == -125


def test_a_later_scan_replaces_the_curve_and_a_scan_without_the_module_gives_none():
    old = {"step": 3, "burnin": "a", "modules": {"m": {"outcome": "done", "points": [{"set_v": -10, "imon": -1}]}}}
    new = {"step": 9, "burnin": "a", "modules": {"m": {"outcome": "breakdown", "points": []}}}
    assert newest_curves([old, new])["m"]["step"] == 10
    assert iv_curve("other", old) is None
    assert iv_curve("m", {"modules": {"m": "garbage"}}) is None
