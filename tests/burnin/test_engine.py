"""The sequencer's engine: gates, holds, abort to the safe state, pause/resume, journal and resume after a crash."""

from __future__ import annotations

import pytest

from burnin.engine import Engine, Refused, State
from burnin.journal import Journal, replay
from burnin.recipe import load_recipe
from burnin.settings import parse_settings

from .stand import Stand, pump, run

SETTINGS = parse_settings(
    {
        "modules": {"module_0": {"compliance_ua": 5}, "module_1": {"compliance_ua": 5}},
        "limits": {"dewpoint_margin_k": 5},
        "retry_interval_s": 1,
        "safe_temperature": 20,
    }
)

SHORT = """
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
  - wait: {duration: 20, name: hold}
  - calibration: {calibration: pixelalive, name: test}
  - power: hv_off
  - power: lv_off
"""


def started(text: str = SHORT, stand: Stand | None = None) -> tuple[Engine, Stand]:
    stand = stand or Stand()
    eng = Engine(SETTINGS)
    eng.start(load_recipe(text, SETTINGS), "bi-1", "alice", "", stand.now, stand.world())
    pump(eng, stand)
    return eng, stand


def test_short_recipe_runs_to_done_with_iv_and_calibration_results():
    eng, stand = started()
    run(eng, stand, 600, until=lambda: eng.state == State.DONE)
    assert eng.state == State.DONE, eng.status()
    assert [h.outcome for h in eng.history] == ["done"] * 9
    iv = eng.results["iv_scan"][0]["modules"]
    assert {m: r["outcome"] for m, r in iv.items()} == {"module_0": "done", "module_1": "done"}
    pts = iv["module_0"]["points"]
    assert [p["set_v"] for p in pts] == [0, -20, -40, -60, -80, -100, -125, -150, -175, -200]
    assert all(abs(p["vmon"] - p["set_v"]) <= 2.0 and p["imon"] <= 0 for p in pts)
    # the scan restored the operating V0Set it found (caen-fsm remembers set values for later switch-ons)
    assert stand.modules["module_0"].v0set == 300.0
    assert eng.results["calibration"][0]["outcome"] == "done"
    assert all(not m.lv and not m.hv_on for m in stand.modules.values())


@pytest.mark.parametrize("status_names_it", [True, False], ids=["from-status", "asked"])
def test_the_calibration_outcome_is_read_from_the_bridge_and_asked_for_only_when_its_status_does_not_say(
    status_names_it,
):
    eng, stand = started(stand=Stand(status_names_last_run=status_names_it))
    run(eng, stand, 600, until=lambda: eng.state == State.DONE)
    assert eng.state == State.DONE, eng.status()
    record = eng.results["calibration"][0]
    assert {k: record[k] for k in ("calibration", "uid", "run", "outcome", "error")} == {
        "calibration": "pixelalive", "uid": "run-1", "run": 1, "outcome": "done", "error": None,
    }  # fmt: skip
    asked = [c for c in stand.log if (c.service, c.name) == ("ph2acf", "status")]
    assert len(asked) == (0 if status_names_it else 1)


def test_a_failed_run_named_by_the_status_waits_for_the_operator():
    stand = Stand()
    eng, stand = started(stand=stand)
    run(eng, stand, 600, until=lambda: stand.ph2acf == "RUNNING")
    stand.ph2acf, stand.last_run = "ERROR", {**stand.last_run, "outcome": "failed", "error": "no ack from the FC7"}
    run(eng, stand, 5)
    assert eng.state == State.HOLDING, eng.status()
    assert "failed no ack from the FC7" in eng.status()["message"]


def test_breakdown_stops_only_that_module_and_ramps_it_down():
    stand = Stand()
    stand.modules["module_1"].breakdown_v = 110.0
    eng, stand = started(stand=stand)
    run(eng, stand, 600, until=lambda: bool(eng.results["iv_scan"]))
    iv = eng.results["iv_scan"][0]["modules"]
    assert iv["module_0"]["outcome"] == "done" and len(iv["module_0"]["points"]) == 10
    assert iv["module_1"]["outcome"] == "breakdown", iv["module_1"]["reason"]
    assert iv["module_1"]["points"][-1]["set_v"] == -125
    # module_1 was ramped to 0 V and switched off long before module_0 finished
    m1_off = [i for i, c in enumerate(stand.log) if c.name == "hv_off" and c.args.get("modules") == ["module_1"]]
    m0_off = [i for i, c in enumerate(stand.log) if c.name == "hv_off" and c.args.get("modules") == ["module_0"]]
    assert m1_off and m0_off and m1_off[0] < m0_off[0]
    ramp = [c for c in stand.log[: m1_off[0]] if c.args.get("module") == "module_1" and c.args.get("value") == 0.0]
    assert ramp, "module_1 was not ramped down before HV off"


def test_compliance_stops_a_module():
    settings = parse_settings({"modules": {"module_0": {"compliance_ua": 0.05}, "module_1": {}}})
    stand = Stand()
    eng = Engine(settings)
    eng.start(load_recipe(SHORT, settings), "bi-2", "bob", "", 0.0, stand.world())
    run(eng, stand, 600, until=lambda: bool(eng.results["iv_scan"]))
    iv = eng.results["iv_scan"][0]["modules"]
    assert iv["module_0"]["outcome"] == "compliance" and iv["module_1"]["outcome"] == "done"


def test_lv_on_holds_until_the_chiller_runs_and_waits_for_the_operator():
    text = "name: t\nsteps:\n  - power: lv_on\n  - wait: 5\n"
    eng, stand = started(text)
    run(eng, stand, 5)
    assert eng.state == State.HOLDING and "chiller is not running" in eng.message
    assert not any(m.lv for m in stand.modules.values())
    stand.chiller = "RUNNING"
    run(eng, stand, 5)
    assert eng.state == State.HOLDING, "an operator hold must not continue by itself"
    eng.resume(stand.now, stand.world(), "alice")
    run(eng, stand, 30, until=lambda: eng.state == State.DONE)
    assert eng.state == State.DONE and all(m.lv for m in stand.modules.values())


def test_cold_target_is_approached_in_steps_above_the_dew_point_and_goes_on_by_itself():
    text = (
        "name: t\nsteps:\n  - chiller: start\n"
        "  - temperature: {target: -20, sensor: bath, stable_for: 5, tolerance: 1}\n"
    )
    stand = Stand(rh=40.0)  # dew point ~ 6 C at 20 C air: floor ~ 11 C
    eng, stand = started(text, stand)
    run(eng, stand, 120)
    assert eng.state == State.HOLDING and eng.status()["hold_auto"] is True
    assert "waiting for dry air" in eng.message
    setpoints = [c.args["value"] for c in stand.log if c.name == "set_setpoint"]
    assert min(setpoints) >= 11.0
    for rh in (20.0, 10.0, 3.0, 1.0):  # the air dries
        stand.rh = rh
        run(eng, stand, 60)
        floor = SETTINGS.limits.dewpoint_margin_k + _dew(20.0, rh)
        assert stand.setpoint >= floor - 0.05
    run(eng, stand, 300, until=lambda: eng.state == State.DONE)
    assert eng.state == State.DONE
    setpoints = [c.args["value"] for c in stand.log if c.name == "set_setpoint"]
    assert setpoints == sorted(setpoints, reverse=True), "the setpoint only steps down as the air dries"


def _dew(t: float, rh: float) -> float:
    from burnin.world import dew_point

    return dew_point(t, rh)


def test_interlock_trip_aborts_to_the_safe_state_and_never_resumes():
    eng, stand = started()
    run(eng, stand, 600, until=lambda: eng.status()["step_name"] == "hold")
    assert all(m.hv_on for m in stand.modules.values())
    stand.interlock = "TRIPPED"
    run(eng, stand, 120, until=lambda: eng.state == State.ABORTED)
    assert eng.state == State.ABORTED and "interlock TRIPPED" in eng.abort_reason
    assert all(not m.lv and not m.hv_on for m in stand.modules.values())
    assert stand.setpoint == 20
    names = [c.name for c in stand.log]
    assert names.index("lv_off", names.index("hv_off", len(names) - 5 - 3)) > 0
    stand.interlock = "OK"
    n = len(stand.log)
    run(eng, stand, 60)
    assert eng.state == State.ABORTED and len(stand.log) == n, "nothing is commanded after an abort"
    with pytest.raises(Refused):
        eng.resume(stand.now, stand.world())


def test_a_command_refused_three_times_aborts_the_burn_in():
    stand = Stand(refuse={"caen/lv_on"}, chiller="RUNNING")
    eng, stand = started("name: t\nsteps:\n  - power: lv_on\n", stand)
    run(eng, stand, 30, until=lambda: eng.state == State.ABORTED)
    assert sum(1 for c in stand.log if c.name == "lv_on") == 3
    assert eng.state == State.ABORTED and "failed after retries" in eng.abort_reason


def test_stale_service_holds_for_the_operator():
    eng, stand = started()
    run(eng, stand, 600, until=lambda: eng.status()["step_name"] == "hold")
    eng.tick(stand.now + 0.1, stand.world(stale={"julabo"}))
    assert eng.state == State.HOLDING and "julabo status is stale" in eng.message


def test_start_is_refused_when_the_interlock_is_not_ok_or_a_service_is_offline():
    stand = Stand(interlock="TRIPPED")
    with pytest.raises(Refused, match="interlock is TRIPPED"):
        started(stand=stand)
    with pytest.raises(Refused, match="service caen is not online"):
        started(stand=Stand(offline={"caen"}))


def test_pause_mid_iv_ramps_down_and_resume_restarts_the_scan(tmp_path):
    eng, stand = started()
    run(eng, stand, 600, until=lambda: eng.status()["step_name"] == "iv" and stand.modules["module_0"].vmon > 50)
    eng.pause(stand.now, "alice")
    pump(eng, stand)
    assert eng.state == State.PAUSED and not any(m.hv_on for m in stand.modules.values())
    n = len(stand.log)
    run(eng, stand, 30)
    assert len(stand.log) == n, "nothing happens while paused"
    eng.resume(stand.now, stand.world(), "alice")
    run(eng, stand, 600, until=lambda: eng.state == State.DONE)
    assert eng.state == State.DONE
    assert [h.outcome for h in eng.history if h.name == "iv"] == ["interrupted", "done"]
    complete = eng.results["iv_scan"][-1]["modules"]["module_0"]["points"]
    assert complete[0]["set_v"] == 0 and len(complete) == 10  # restarted from its beginning


def test_skip_is_logged_with_the_operator():
    eng, stand = started("name: t\nsteps:\n  - prompt: check\n  - wait: 1\n")
    eng.skip(stand.now, "carol")
    out = eng.drain()
    assert any(e["kind"] == "step_skipped" and e["operator"] == "carol" for e in out.events)
    assert any(r["rec"] == "step_end" and r["outcome"] == "skipped" for r in out.journal)


def test_prompt_waits_for_acknowledgement():
    eng, stand = started("name: t\nsteps:\n  - prompt: check the box\n  - wait: 1\n")
    run(eng, stand, 10)
    assert eng.state == State.RUNNING and "check the box" in eng.message and eng.index == 0
    eng.acknowledge(stand.now, "dave")
    run(eng, stand, 5, until=lambda: eng.state == State.DONE)
    assert eng.state == State.DONE


def test_killed_mid_step_comes_back_paused_at_that_step_and_commands_nothing(tmp_path):
    journal = Journal(tmp_path)
    stand = Stand()
    eng = Engine(SETTINGS)
    eng.start(load_recipe(SHORT, SETTINGS), "bi-1", "alice", "", stand.now, stand.world())

    def step_and_journal(seconds, until=None):
        end = stand.now + seconds
        while stand.now < end:
            stand.advance(0.25)
            eng.tick(stand.now, stand.world())
            for rec in eng.out.journal:
                journal.append(rec)
            eng.out.journal.clear()
            pump(eng, stand)
            for rec in eng.out.journal:
                journal.append(rec)
            eng.out.journal.clear()
            if until and until():
                return

    for rec in eng.out.journal:
        journal.append(rec)
    eng.out.journal.clear()
    step_and_journal(600, until=lambda: eng.status()["step_name"] == "iv" and stand.modules["module_1"].vmon > 40)
    journal.close()
    # the process dies here (no clean-up). A new engine reads the journal:
    with (tmp_path / "active.jsonl").open("a") as fh:
        fh.write('{"rec": "step_end", "ind')  # torn last line from the power cut
    back = replay(journal.read())
    assert back is not None and back.index == 3 and back.ended is None
    fresh = Engine(SETTINGS)
    recipe = load_recipe(back.recipe_text, SETTINGS, back.modules)
    fresh.restore(recipe, back.info, back.history, back.index, back.state, stand.now)
    assert fresh.state == State.PAUSED and fresh.status()["step"] == 4 and fresh.status()["step_name"] == "iv"
    assert [h.outcome for h in fresh.history] == ["done", "done", "done", "interrupted"]
    n = len(stand.log)
    run(fresh, stand, 30)
    assert fresh.state == State.PAUSED and len(stand.log) == n, "it never resumes or commands by itself"
    fresh.resume(stand.now, stand.world(), "alice")
    run(fresh, stand, 600, until=lambda: fresh.state == State.DONE)
    assert fresh.state == State.DONE
    assert fresh.results["iv_scan"][-1]["modules"]["module_1"]["points"][0]["set_v"] == 0


def test_status_shows_step_cycle_elapsed_eta_and_the_gate_message():
    eng, stand = started()
    st = eng.status()
    recipe = eng.recipe
    assert st["step"] == 1 and st["steps"] == 9 and st["cycles"] == 0 and st["operator"] == "alice"
    assert st["eta_s"] == pytest.approx(recipe.estimate_s, abs=1.0)
    run(eng, stand, 600, until=lambda: eng.status()["step_name"] == "hold")
    st = eng.status()
    assert st["step"] == 6 and st["step_name"] == "hold" and "s left" in st["message"]
    assert st["elapsed_s"] == pytest.approx(stand.now, abs=1.0)
    assert st["eta_s"] <= recipe.remaining_s(5)


def test_died_while_aborting_comes_back_failed_and_abort_runs_the_shutdown_again(tmp_path):
    journal = Journal(tmp_path)
    eng, stand = started()
    run(eng, stand, 600, until=lambda: eng.status()["step_name"] == "hold")
    eng.abort(stand.now, "operator test")
    # journaled up to the abort; the process dies before the shutdown ends
    for rec in [*stand.journaled, *eng.drain().journal]:
        journal.append(rec)
    journal.close()
    back = replay(journal.read())
    assert back is not None and back.state == "ABORTING" and back.ended is None
    fresh = Engine(SETTINGS)
    fresh.restore(eng.recipe, back.info, back.history, back.index, back.state, stand.now)
    assert fresh.state == State.FAILED and "abort again" in fresh.message
    with pytest.raises(Refused):
        fresh.resume(stand.now, stand.world())
    fresh.abort(stand.now, "operator finishes the shutdown")
    run(fresh, stand, 120, until=lambda: fresh.state == State.ABORTED)
    assert fresh.state == State.ABORTED and all(not m.lv and not m.hv_on for m in stand.modules.values())


def test_an_iv_scan_takes_its_physical_time_even_when_readings_are_deadbanded():
    """The crate's status is republished only on change beyond its deadbands: a settled point must not wait for
    the next heartbeat. Ramps + settling is the physical time; the sequencer may add at most 5 %."""
    text = SHORT.replace("  - power: hv_on\n  - wait: {duration: 20, name: hold}\n", "")
    eng, stand = started(text)
    run(eng, stand, 600, dt=0.02, until=lambda: bool(eng.results["iv_scan"]))
    iv_step = next(h for h in eng.history if h.name == "iv")
    profile = eng.recipe.profiles["p"]
    assert iv_step.end is not None
    assert iv_step.end - iv_step.start <= profile.physical_s() * 1.05 + 0.5, (iv_step.end - iv_step.start, profile)


# ---------------------------------------------------------------- timed events: the adapter wakes exactly then


def test_a_wait_step_tells_when_it_ends_so_no_polling_period_adds_to_it():
    eng, stand = started()
    run(eng, stand, 600, until=lambda: eng.status()["step_name"] == "hold")
    hold = eng.history[-1]
    assert eng.next_tick() == pytest.approx(hold.start + 20.0)
    # ticked exactly then (as the service's loop does), the step ends at its duration, not a tick later
    stand.now = eng.next_tick()
    eng.tick(stand.now, stand.world())
    assert eng.history[-2].name == "hold" and eng.history[-2].end - eng.history[-2].start == pytest.approx(20.0)


def test_a_settling_iv_point_tells_when_it_is_due():
    eng, stand = started()
    run(eng, stand, 600, dt=0.01, until=lambda: "settle" in eng.status()["message"])
    scan = eng.runner.scan
    settling = [s for s in scan.scans.values() if s.phase.value == "settle"]
    assert settling and eng.next_tick() <= min(s.since for s in settling) + scan.profile.settle_s + 1e-9


def test_a_temperature_step_wakes_when_stable_for_has_passed():
    eng, stand = started()
    run(eng, stand, 600, dt=0.05, until=lambda: eng.runner is not None and eng.runner.stable_since is not None)
    assert eng.status()["step_name"] == "warm"
    assert eng.next_tick() <= eng.runner.stable_since + 5.0 + 1e-9


def test_with_nothing_timed_only_a_message_or_a_retry_wakes_the_engine():
    from burnin.tracker import Tracker
    from burnin.world import Command, Reply

    tracker = Tracker(retries=3, interval_s=2.0, reply_timeout_s=15.0)
    assert tracker.next_due() == float("inf")
    tracker.send("step0:1", Command("caen", "lv_on", {}), 100.0)
    assert tracker.next_due() == 115.0  # the reply timeout
    ident, _ = tracker.drain()[0]
    tracker.on_reply(ident, Reply(False, "busy"), 101.0)
    assert tracker.next_due() == 103.0  # the retry


def test_a_refused_command_is_tried_again_when_due_unless_a_newer_one_of_the_same_key_replaced_it():
    from burnin.tracker import Status, Tracker
    from burnin.world import Command, Reply

    tracker = Tracker(retries=3, interval_s=2.0, reply_timeout_s=15.0)
    tracker.send("iv", Command("caen", "set", {"value": 10}, key="v0"), 0.0)
    tracker.send("iv", Command("caen", "set", {"value": 1}, key="other"), 0.0)
    (first, _), (other, _) = tracker.drain()
    tracker.on_reply(first, Reply(False, "busy"), 1.0)
    tracker.on_reply(other, Reply(False, "busy"), 1.0)
    tracker.send("iv", Command("caen", "set", {"value": 20}, key="v0"), 1.5)  # the next point replaces it
    ((newer, cmd),) = tracker.drain()
    assert cmd.args == {"value": 20}
    tracker.tick(3.0)
    # only the refused command nobody replaced goes out again; the replaced one is dropped, not woken for
    assert [c.args for _, c in tracker.drain()] == [{"value": 1}]
    assert tracker.next_due() == pytest.approx(16.5)  # the newer command's reply timeout, nothing earlier
    tracker.on_reply(newer, Reply(True), 3.5)
    assert tracker.status("iv", "v0").status == Status.OK


def test_lv_off_right_after_an_iv_scan_waits_for_the_scan_to_finish_ramping_down():
    """The standard recipe's IV block: IV scan, then LV off. The scan ends with HV off, so LV off must find HV
    off (not still ramping the last volts down) and go on without an operator."""
    text = SHORT.split("  - power: hv_on\n")[0] + "  - power: {action: lv_off, name: LV off after IV}\n"
    eng, stand = started(text)
    run(eng, stand, 600, dt=0.05, until=lambda: eng.state != State.RUNNING)
    assert eng.state == State.DONE, eng.status()
    assert [h.outcome for h in eng.history] == ["done"] * 5


def test_settling_counts_from_when_the_channel_got_there_not_from_when_the_news_arrived():
    """A status document reaches the sequencer some time after the crate read it (transport, a busy machine):
    the settle time runs from the reading's own time stamp, never from before the point was asked for."""
    from burnin.iv import IvScan
    from burnin.recipe import IvProfile
    from burnin.world import Source

    scan = IvScan(IvProfile(points=(-100.0, -120.0), settle_s=1.0, ramp_v_per_s=10.0), {"m": 10.0})
    scan.begin(0.0, {"m": 300.0})
    doc = {"state": "HV_ON", "hv_vmon": 100.0, "hv_imon": 0.1, "ts": 0.0}
    scan.tick(10.3, {"m": Source(doc, at=10.3, stamped=10.0)}, {})  # read at 10.0, heard of at 10.3
    assert scan.next_due() == pytest.approx(11.0)
    assert scan.tick(11.0, {"m": Source(doc, at=10.3, stamped=10.0)}, {})  # the point, and the next V0Set
    assert scan.scans["m"].points[0].t == 11.0
    # a time stamp from before the point was asked for (a skewed clock) cannot shorten the settling
    doc2 = {**doc, "hv_vmon": 120.0}
    scan.tick(13.5, {"m": Source(doc2, at=13.5, stamped=5.0)}, {})
    assert scan.next_due() == pytest.approx(12.0)


def test_under_a_time_scale_a_point_is_not_failed_for_messages_still_in_flight():
    """The allowance for a command and its status to travel is real time (like the reply timeout): at time
    scale 300, 0.2 s of real latency are 60 s on the sequencer's clock and must not fail the scan."""
    from burnin.iv import IvScan, ScanOutcome
    from burnin.recipe import IvProfile
    from burnin.world import Source

    def scan_after(real_s: float) -> IvScan:
        scan = IvScan(IvProfile(points=(0.0, -10.0)), {"m": 10.0}, real_s=real_s)
        scan.begin(0.0, {"m": 300.0})
        old = {"state": "LV_ON", "hv_vmon": 0.0, "hv_imon": 0.0}
        scan.tick(60.0, {"m": Source(old, at=-1.0)}, {})  # nothing new heard for 60 s of engine time
        return scan

    assert scan_after(1.0).scans["m"].outcome == ScanOutcome.FAILED  # a real minute: something is wrong
    assert scan_after(300.0).scans["m"].outcome == ScanOutcome.RUNNING  # 0.2 s real: still in flight


def test_under_a_time_scale_a_power_step_waits_at_least_30_real_seconds_for_the_crate():
    from burnin.world import Reply

    class DeafCrate(Stand):
        def apply(self, cmd):  # accepts lv_on but the modules never come on
            return Reply(True, result={}) if cmd.name == "lv_on" else super().apply(cmd)

    def outcome(scale: float) -> State:
        settings = parse_settings({"modules": {"module_0": {}, "module_1": {}}, "time_scale": scale})
        text = "name: t\nsteps:\n  - chiller: start\n  - power: {action: lv_on, timeout: 60}\n"
        stand = DeafCrate()
        eng = Engine(settings)
        eng.start(load_recipe(text, settings), "bi-1", "alice", "", stand.now, stand.world())
        pump(eng, stand)
        run(eng, stand, 600, until=lambda: eng.state != State.RUNNING)
        return eng.state

    assert outcome(1.0) == State.ABORTING  # 60 s without LV: something is wrong, to the safe state
    assert outcome(300.0) == State.RUNNING  # 600 engine s are 2 real s at scale 300: messages may be in flight


def test_a_cold_approach_that_undershot_is_not_driven_further_away():
    """Approaching -34 C with the setpoint overdriven to -39 C, the carrier may overshoot below -35 C: then the
    hold offset applies (setpoint -36 C), never the overdrive again."""
    text = (
        "name: t\nsteps:\n  - chiller: start\n"
        "  - temperature: {target: -34, sensor: bath, tolerance: 1, stable_for: 5, timeout: 1h,"
        " approach_offset: -5, hold_offset: -2}\n"
    )
    settings = parse_settings({"modules": {"module_0": {}}, "limits": {"setpoint_min": -40}})
    stand = Stand(bath=20.0, rh=0.1)
    eng = Engine(settings)
    eng.start(load_recipe(text, settings), "bi-1", "alice", "", stand.now, stand.world())
    pump(eng, stand)
    run(eng, stand, 5)
    assert stand.setpoint == -39.0  # overdrive on the way down
    stand.bath = -37.0  # overshoot
    run(eng, stand, 1)
    assert stand.setpoint == -36.0
