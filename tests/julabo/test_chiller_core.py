"""What the service decides about the chiller, fed replies, silence and time (no link, no thread, no MQTT):
when the link is given up, when a stop is news, what a gap means and what is put back, what is refused."""

from __future__ import annotations

from typing import Any

import pytest
from julabo_fsm.chiller_core import (
    SLOW_READINGS,
    ChillerCore,
    Notice,
    Publish,
    backoff_s,
    start_took,
    stop_failure_reason,
    took,
)
from julabo_fsm.driver import DriverConfig
from julabo_fsm.fsm import State
from julabo_fsm.protocol import Reading, Setting, StatusReport, format_status, model_map, parse_status

pytestmark = pytest.mark.fast

URL = "socket://127.0.0.1:1"
MANUAL_STOP, MANUAL_START, REMOTE_STOP, REMOTE_START = 0, 1, 2, 3
LOW_LEVEL, VALUE_TOO_LARGE = -1, -11
BEFORE = {
    Reading.SETPOINT_1: 20.0,
    Reading.SETPOINT_2: -5.0,
    Reading.SETPOINT_3: 20.0,
    Reading.ACTIVE_SETPOINT: 1,
    Reading.CONTROL_SENSOR: 1,
    Reading.PUMP_STAGE: 3,
    Reading.EXTERNAL_TEMP: -4.0,
    Reading.BATH_TEMP: -5.1,
    Reading.HEATING_POWER: 10.0,
}
POWER_ON = {
    **BEFORE,
    Reading.SETPOINT_2: 20.0,
    Reading.ACTIVE_SETPOINT: 0,
    Reading.CONTROL_SENSOR: 0,
    Reading.PUMP_STAGE: 2,
}


def status(code: int) -> StatusReport:
    return parse_status(format_status(code).encode() + b"\r\n")


def kinds(outputs: list[Any]) -> list[str]:
    return [o.kind for o in outputs if isinstance(o, Notice)]


def notice(outputs: list[Any], kind: str) -> Notice:
    return next(o for o in outputs if isinstance(o, Notice) and o.kind == kind)


def make(**config: Any) -> ChillerCore:
    return ChillerCore(model_map(config.pop("model", "hightech")), DriverConfig(**config))


def read_all(core: ChillerCore, values: dict[Reading, Any], code: int, now: float = 100.0) -> list[Any]:
    """One complete sweep: STATUS and every value answered."""
    out = core.status_line(status(code), now)
    for reading, value in values.items():
        core.replied()
        core.reading(reading, value, now)
    return out


@pytest.fixture
def core() -> ChillerCore:
    """A chiller connected, read in full and running under the DCS's command."""
    c = make()
    c.link_up("JULABO HIGHTECH FP50-HL", URL)
    read_all(c, BEFORE, REMOTE_START)
    assert not c.cycle_done(sweep=True, complete=True)
    c.commanded(True)
    return c


# ---------------------------------------------------------------------------------------------- the link
def test_a_chiller_is_disconnected_until_its_first_status_line():
    c = make()
    assert c.state is State.DISCONNECTED and not c.connected
    assert c.link_up("JULABO", URL) == []  # the first connect is no "reconnected"
    out = c.status_line(status(REMOTE_STOP), 1.0)
    assert c.state is State.STOPPED and c.connected
    assert kinds(out) == ["state_change"] and Publish(force=True) in out


def test_silence_drops_the_link_only_after_max_missed_replies_in_a_row(core):
    assert core.silence() is None
    assert core.silence() is None
    core.replied()  # one answer resets the count
    assert core.silence() is None and core.silence() is None
    assert core.silence() == "no reply to 3 commands in a row"
    assert core.counters["silent"] == 5


def test_after_silence_everything_is_read_again(core):
    assert core.slow_items() == [SLOW_READINGS[0]]  # normally one slow value per cycle, in turn
    assert core.slow_items() == [SLOW_READINGS[1]]
    core.silence()
    core.replied()
    assert core.slow_items() == list(SLOW_READINGS)


def test_a_model_without_pump_stage_never_reads_it():
    c = make(model="corio")
    assert Reading.PUMP_STAGE not in c.slow_items()


def test_unintelligible_replies_put_the_chiller_in_error_after_garbled_for_error_in_a_row(core):
    assert core.garbled("junk") == [] and core.garbled("junk") == []
    out = core.garbled("junk")
    assert core.state is State.ERROR and kinds(out) == ["state_change", "error"]
    assert notice(out, "error").severity == "alarm"
    assert core.garbled("junk") == []  # the same error is not reported twice


def test_one_good_reply_between_garbled_ones_restarts_the_count(core):
    core.garbled("junk")
    core.garbled("junk")
    core.reading(Reading.BATH_TEMP, -5.0, 101.0)
    core.garbled("junk")
    assert core.state is State.RUNNING


def test_a_lost_link_is_an_alarm_once_but_an_operator_reconnect_is_only_news(core):
    out = core.link_lost("connection reset")
    assert core.state is State.DISCONNECTED and kinds(out) == ["state_change", "disconnected"]
    assert notice(out, "disconnected").severity == "alarm" and Publish(force=True) in out
    assert core.link_lost("connection reset") == []  # already disconnected
    c = make()
    c.link_up("JULABO", URL)
    c.status_line(status(REMOTE_STOP), 1.0)
    out = c.link_lost("reconnect requested by the operator", requested=True)
    assert notice(out, "disconnected").severity == "info" and notice(out, "disconnected").data["requested"]


def test_reconnect_attempts_back_off_doubling_up_to_the_maximum():
    assert [backoff_s(n, 1.0, 30.0) for n in (1, 2, 3, 4, 5, 6, 7)] == [1, 2, 4, 8, 16, 30, 30]
    c = make(reconnect_min_s=0.5, reconnect_max_s=4.0)
    assert c.connect_failed("refused") is True  # the first failure is logged
    assert c.connect_failed("refused") is False  # the same again is not
    assert c.connect_failed("timeout") is True  # a new reason is
    assert c.backoff_s() == 2.0
    c.retry_now()  # the operator's reconnect starts from the minimum again
    assert c.backoff_s() == 0.5


def test_after_a_reconnect_nothing_read_before_is_shown(core):
    core.link_lost("reset")
    out = core.link_up("JULABO", URL)
    assert kinds(out) == ["reconnected"] and core.counters["reconnects"] == 1
    assert core.values == {} and core.read_at == {}
    assert core.slow_items() == list(SLOW_READINGS)


# ---------------------------------------------------------------------------------------------- STATUS lines
def test_an_alarm_is_reported_once_per_code_and_its_end_once(core):
    out = core.status_line(status(LOW_LEVEL), 101.0)
    assert core.state is State.ALARM and kinds(out) == ["alarm", "state_change"]
    assert notice(out, "alarm").data == {"status_code": -1, "status_text": "LOW LEVEL ALARM"}
    assert core.status_line(status(LOW_LEVEL), 102.0) == []
    out = core.status_line(status(REMOTE_STOP), 103.0)
    assert kinds(out) == ["alarm_cleared", "state_change"] and core.state is State.STOPPED
    assert "stopped_externally" not in kinds(out)  # an alarm stops the chiller: that is no news


def test_a_stop_from_the_front_panel_is_reported(core):
    out = core.status_line(status(MANUAL_STOP), 101.0)
    assert kinds(out) == ["stopped_externally", "state_change"]
    assert notice(out, "stopped_externally").severity == "warning"


def test_a_stop_the_dcs_asked_for_is_not_reported_but_the_next_one_after_a_restart_is(core):
    core.commanded(False)
    assert kinds(core.status_line(status(REMOTE_STOP), 101.0)) == ["state_change"]
    core.status_line(status(MANUAL_START), 102.0)  # started again on the front panel
    assert "stopped_externally" in kinds(core.status_line(status(MANUAL_STOP), 103.0))


def test_a_refused_command_changes_nothing(core):
    before = core.read_at["status"]
    assert core.status_line(status(VALUE_TOO_LARGE), 200.0) == []
    assert core.state is State.RUNNING and core.status is not None and core.status.code == REMOTE_START
    assert core.read_at["status"] == before


# ---------------------------------------------------------------------------------------------- gaps
def gap(core: ChillerCore, values: dict[Reading, Any], code: int) -> list[Any]:
    """Silence, the link lost, the link back and a complete sweep."""
    core.silence()
    core.link_lost("no reply to 3 commands in a row")
    core.link_up("JULABO", URL)
    out = read_all(core, values, code, now=300.0)
    return out


def test_a_running_chiller_back_stopped_with_power_on_values_lost_power(core):
    out = gap(core, POWER_ON, REMOTE_STOP)
    assert "stopped_externally" not in kinds(out)  # a gap is judged as a whole, not as a stop
    assert core.cycle_done(sweep=True, complete=True)  # judge now
    verdict = core.judge_gap()
    assert verdict.power_failure and verdict.was_running
    plan = core.to_restore(verdict)
    assert [s for s, _, _ in plan] == [Setting.SETPOINT_2, Setting.ACTIVE_SETPOINT, Setting.CONTROL_SENSOR,
                                       Setting.PUMP_STAGE]  # fmt: skip
    assert Setting.RUNNING not in [s for s, _, _ in plan]  # the DCS never starts the chiller again
    out = core.power_failure(verdict, {"setpoint_2": -5.0}, {"pump_stage": "no read-back"})
    alarm = notice(out, "power_failure")
    assert alarm.severity == "alarm" and "STOPPED" in alarm.message and "NOT restored: ['pump_stage']" in alarm.message
    assert alarm.data["restored"] == {"setpoint_2": -5.0} and alarm.data["not_restored"] == {
        "pump_stage": "no read-back"
    }
    assert not core.outage.open and not core.cycle_done(sweep=True, complete=True)  # one gap, one alarm


def test_a_gap_with_nothing_changed_is_no_power_failure(core):
    gap(core, BEFORE, REMOTE_START)
    assert core.cycle_done(sweep=True, complete=True)
    assert not core.judge_gap().power_failure
    assert not core.outage.open


def test_a_gap_is_judged_only_after_a_complete_sweep(core):
    gap(core, POWER_ON, REMOTE_STOP)
    assert not core.cycle_done(sweep=True, complete=False)  # a reply missing: not yet
    assert not core.cycle_done(sweep=False, complete=True)  # not everything read: not yet
    core.sweep()
    assert core.cycle_done(sweep=True, complete=True)


def test_values_the_chiller_already_holds_are_not_written_again(core):
    gap(core, POWER_ON, REMOTE_STOP)
    core.cycle_done(sweep=True, complete=True)
    verdict = core.judge_gap()
    core.reading(Reading.SETPOINT_2, -5.0, 301.0)  # put back meanwhile
    assert Setting.SETPOINT_2 not in [s for s, _, _ in core.to_restore(verdict)]


def test_restoring_can_be_switched_off_but_the_power_failure_is_still_an_alarm():
    c = make(restore_after_power_failure=False)
    c.link_up("JULABO", URL)
    read_all(c, BEFORE, REMOTE_START)
    c.cycle_done(sweep=True, complete=True)
    gap(c, POWER_ON, REMOTE_STOP)
    c.cycle_done(sweep=True, complete=True)
    verdict = c.judge_gap()
    assert verdict.power_failure and c.to_restore(verdict) == []


def test_the_dcs_own_writes_during_a_gap_are_no_lost_values(core):
    core.silence()
    core.own_change(Reading.SETPOINT_2, 20.0)
    core.replied()
    read_all(core, {**BEFORE, Reading.SETPOINT_2: 20.0}, REMOTE_START)
    assert core.cycle_done(sweep=True, complete=True)
    assert not core.judge_gap().power_failure


def test_a_stop_the_dcs_asked_for_before_a_gap_is_no_power_failure(core):
    core.commanded(False)
    gap(core, BEFORE, REMOTE_STOP)
    core.cycle_done(sweep=True, complete=True)
    assert not core.judge_gap().power_failure


# ---------------------------------------------------------------------------------------------- commands
def test_commands_are_refused_in_manual_mode(core):
    core.status_line(status(MANUAL_START), 101.0)
    assert "manual mode" in (core.remote_refusal() or "")
    assert "manual mode" in (core.start_refusal() or "")


def test_start_is_refused_in_alarm_and_allowed_in_remote_mode(core):
    core.status_line(status(REMOTE_STOP), 101.0)
    assert core.start_refusal() is None
    core.status_line(status(LOW_LEVEL), 102.0)
    assert core.start_refusal() == "chiller in alarm (-01 LOW LEVEL ALARM): clear it on the front panel first"


def test_a_start_counts_only_when_status_says_running():
    assert start_took(status(REMOTE_START)) is None
    assert start_took(status(REMOTE_STOP)) == "the chiller did not start: STATUS 02 REMOTE STOP"


def test_a_written_value_counts_when_it_reads_back_within_a_hundredth():
    assert took(-5.0, -5.01) and took(3, 3)
    assert not took(-5.0, -5.02) and not took(-5.0, None)


def test_a_stop_that_never_took_is_an_alarm_that_says_why():
    why = stop_failure_reason(status(REMOTE_START), 1, status(-9))
    assert why == (
        "STATUS 03 REMOTE START, IN_MODE_05 reads 1 "
        "(the chiller refused the stop: -09 COMMAND NOT ALLOWED IN CURRENT OPERATING MODE)"
    )
    assert stop_failure_reason(None, None, None) == "no readable STATUS"
    message, out = make().stop_failed(3, why)
    assert "did not stop after 3 attempts" in message and "may still be RUNNING" in message
    assert notice(out, "stop_failed").severity == "alarm" and Publish(force=True) in out


# ---------------------------------------------------------------------------------------------- the status document
def test_a_reading_older_than_stale_after_s_is_published_as_null(core):
    doc = core.snapshot(now=104.0)
    assert doc["bath_temp"] == -5.1 and doc["status_text"] == "REMOTE START" and doc["bath_temp_read_at"] == 100.0
    assert doc["setpoint"] == -5.0 and doc["active_setpoint"] == 2 and doc["control_sensor"] == "external"
    late = core.snapshot(now=106.0)
    assert late["bath_temp"] is None and late["status_code"] is None and late["bath_temp_read_at"] == 100.0
    assert late["setpoint_2"] == -5.0  # settings do not go stale: they change only when written


def test_disconnected_nothing_is_shown(core):
    core.link_lost("reset")
    doc = core.snapshot(now=100.5)
    assert doc["state"] == "DISCONNECTED" and not doc["connected"]
    assert doc["bath_temp"] is None and doc["setpoint_1"] is None and doc["status_read_at"] is None
