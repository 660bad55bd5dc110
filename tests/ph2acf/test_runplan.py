"""What the bridge decides about a run, without Ph2_ACF, MQTT or files: whether it may start, what its end
amounts to, its number in TCP mode, how it is announced and what the stored document says."""

from pathlib import Path

import pytest
from ph2acf_bridge.document import SCHEMA_VERSION, ResultFile, Stand, run_document
from ph2acf_bridge.fsm import RunMachine, RunState, Trigger
from ph2acf_bridge.runner import RunEnd
from ph2acf_bridge.runplan import (
    RunContext,
    after_storing,
    error_event,
    next_run_number,
    run_outcome,
    run_start_event,
    run_stop_event,
    run_uid,
    start_refusal,
)

pytestmark = pytest.mark.fast


def context(**over) -> RunContext:
    base = dict(
        uid="stand1-20261201T100000-0123abcd",
        calibration="pixelalive",
        config_file=Path("/cfg/CMSIT.xml"),
        config_xml="<HwDescription/>",
        modules=["M1"],
        operator="alice",
        comment="first light",
        conditions_start={"caen": {"state": "HV_ON"}},
        run=7,
        start_ts=1000.0,
    )
    base.update(over)
    return RunContext(**base)


def refusal(**over) -> str | None:
    args = dict(
        operator="alice", state=RunState.IDLE, current=None, blocked=None, refuse_when_tripped=True, interlock="OK"
    )
    args.update(over)
    return start_refusal(**args)


# ---------------------------------------------------------------------------------------------- may a run start
def test_a_run_starts_when_idle_or_after_a_failed_run_with_the_interlock_ok():
    assert refusal() is None
    assert refusal(state=RunState.ERROR) is None


def test_a_run_needs_an_operator():
    assert refusal(operator="   ") == "operator must not be empty"


@pytest.mark.parametrize("state", [RunState.STARTING, RunState.RUNNING, RunState.ABORTING, RunState.STORING])
def test_one_run_at_a_time_and_the_refusal_names_the_run_in_progress(state):
    why = refusal(state=state, current=context(run=12, calibration="scurve"))
    assert why is not None
    assert "already in progress" in why and "run 12" in why and "scurve" in why and state.value in why


def test_a_scan_left_running_on_the_server_blocks_new_runs_until_confirmed_stopped():
    why = refusal(blocked={"run": 41, "uid": "x"})
    assert why is not None and "run 41" in why and "server_stopped" in why


@pytest.mark.parametrize("interlock", ["TRIPPED", "STALE", "MISSING"])
def test_an_interlock_that_is_not_ok_refuses_runs(interlock):
    assert refusal(interlock=interlock) == f"interlock is {interlock}: runs are refused until it is OK"


def test_an_interlock_never_heard_of_or_the_check_switched_off_does_not_refuse():
    assert refusal(interlock=None) is None
    assert refusal(interlock="TRIPPED", refuse_when_tripped=False) is None


def test_the_first_reason_wins_when_several_apply():
    assert refusal(operator="", state=RunState.RUNNING) == "operator must not be empty"
    assert "already in progress" in (refusal(state=RunState.RUNNING, blocked={"run": 1}, interlock="TRIPPED") or "")
    assert "left running" in (refusal(blocked={"run": 1}, interlock="TRIPPED") or "")


def test_the_run_uid_names_the_stand_and_the_start_time():
    assert run_uid("stand1", "20261201T100000", "0123456789abcdef") == "stand1-20261201T100000-01234567"


# ---------------------------------------------------------------------------------------------- the end of a run
def test_a_run_that_ends_cleanly_is_done():
    assert run_outcome(RunEnd(exit_code=0), timed_out=False) == ("done", None)


def test_an_operator_abort_is_aborted_not_failed():
    assert run_outcome(RunEnd(aborted=True), timed_out=False) == ("aborted", None)


def test_a_runner_error_fails_the_run_with_that_error():
    assert run_outcome(RunEnd(error="exit code 134"), timed_out=False) == ("failed", "exit code 134")


def test_a_run_stopped_for_exceeding_max_run_s_failed_whatever_the_runner_says():
    assert run_outcome(RunEnd(aborted=True), timed_out=True) == ("failed", "run exceeded max_run_s")
    assert run_outcome(RunEnd(error="killed"), timed_out=True) == ("failed", "run exceeded max_run_s")


@pytest.mark.parametrize(
    ("outcome", "state"), [("done", RunState.IDLE), ("aborted", RunState.IDLE), ("failed", RunState.ERROR)]
)
def test_after_storing_a_failed_run_the_bridge_shows_error_otherwise_idle(outcome, state):
    machine = RunMachine()
    for trigger in (Trigger.START, Trigger.LAUNCHED, Trigger.ENDED, after_storing(outcome)):
        assert machine.fire(trigger)
    assert machine.state == state


def test_a_bridge_error_puts_the_machine_in_error_from_any_state_through_its_trigger():
    for path in ([], [Trigger.START], [Trigger.START, Trigger.LAUNCHED], [Trigger.START, Trigger.ABORT]):
        machine = RunMachine()
        for trigger in path:
            machine.fire(trigger)
        assert machine.fire(Trigger.FAIL) and machine.state == RunState.ERROR and not machine.active
    assert machine.fire(Trigger.START)  # and a new run may start from there


# ---------------------------------------------------------------------------------------------- run numbers (TCP)
def test_the_run_number_continues_the_bridges_own_counter():
    assert next_run_number("12\n", ph2acf_next=0, archived_max=None) == (12, "13\n")


def test_the_run_number_never_goes_below_what_ph2acf_or_the_archive_already_used():
    assert next_run_number("3", ph2acf_next=20, archived_max=None) == (20, "21\n")
    assert next_run_number("3", ph2acf_next=0, archived_max=30) == (31, "32\n")


def test_a_missing_or_unreadable_counter_starts_from_the_others():
    assert next_run_number(None, ph2acf_next=0, archived_max=None) == (0, "1\n")
    assert next_run_number("garbage", ph2acf_next=5, archived_max=2) == (5, "6\n")


# ---------------------------------------------------------------------------------------------- announcements
def test_run_start_and_run_stop_carry_the_same_timestamps_as_the_document():
    ctx = context(started_event_sent=True)
    start = run_start_event(ctx)
    stop = run_stop_event(ctx, "done", 1060.0)
    assert start.kind == "run_start" and start.data["start_ts"] == 1000.0 and start.data["uid"] == ctx.uid
    assert stop is not None and stop.kind == "run_stop" and stop.severity == "info"
    assert (stop.data["start_ts"], stop.data["stop_ts"], stop.data["outcome"]) == (1000.0, 1060.0, "done")


def test_a_run_that_did_not_end_done_stops_with_a_warning():
    stop = run_stop_event(context(started_event_sent=True), "aborted", 1060.0)
    assert stop is not None and stop.severity == "warning" and "aborted" in stop.message


def test_a_run_that_never_launched_gets_no_run_stop_but_an_alarm():
    ctx = context(started_event_sent=False, run=None)
    assert run_stop_event(ctx, "failed", 1001.0) is None
    alarm = error_event(ctx, "executable not found")
    assert alarm is not None and alarm.severity == "alarm" and alarm.data["error"] == "executable not found"
    assert error_event(ctx, None) is None


# ---------------------------------------------------------------------------------------------- the document
STAND = Stand(stand="stand1", flavour="it", mode="subprocess", bridge_version="9.9")


def test_the_document_records_who_what_when_and_how_it_ended():
    ctx = context()
    ctx.extra["abort_reason"] = "operator request"
    end = RunEnd(exit_code=0, log_tail=["bye"])
    result = ResultFile({"name": "r.root", "path": "/r/r.root", "bytes": 10}, {"modules": 1}, None)
    doc = run_document(
        ctx,
        end,
        outcome="aborted",
        error=None,
        stop_ts=1060.5,
        stand=STAND,
        result=result,
        conditions_end={"caen": {"state": "OFF"}},
    )
    assert doc["schema"] == SCHEMA_VERSION
    assert (doc["uid"], doc["run"], doc["stand"], doc["operator"]) == (ctx.uid, 7, "stand1", "alice")
    assert (doc["calibration"], doc["flavour"], doc["mode"]) == ("pixelalive", "it", "subprocess")
    assert doc["calibration_name"]  # the flavour's long name of the calibration
    assert (doc["start_ts"], doc["stop_ts"], doc["duration_s"]) == (1000.0, 1060.5, 60.5)
    assert (doc["outcome"], doc["abort_reason"], doc["exit_code"]) == ("aborted", "operator request", 0)
    assert doc["config_file"] == "/cfg/CMSIT.xml" and doc["config_xml"] == "<HwDescription/>"
    assert doc["result_file"]["bytes"] == 10 and doc["summary"] == {"modules": 1} and doc["summary_error"] is None
    assert doc["conditions"] == {"start": {"caen": {"state": "HV_ON"}}, "end": {"caen": {"state": "OFF"}}}
    assert doc["bridge_version"] == "9.9" and doc["log_tail"] == ["bye"]


def test_a_run_that_never_started_has_zero_duration_and_no_result():
    doc = run_document(
        context(start_ts=None, run=None),
        RunEnd(error="no executable"),
        outcome="failed",
        error="no executable",
        stop_ts=5.0,
        stand=STAND,
        result=ResultFile(),
        conditions_end={},
    )
    assert doc["duration_s"] == 0.0 and doc["result_file"] is None and doc["summary"] is None
    assert doc["error"] == "no executable" and doc["run"] is None
