"""The driver's safety decisions as pure functions: outages, power-failure verdicts, stop verdicts, freshness."""

from __future__ import annotations

import pytest
from julabo_fsm.protocol import Reading, Setting, parse_status
from julabo_fsm.safety import Outage, OutagePhase, RunWatch, Verdict, fresh, judge_gap, stop_verdict

BEFORE = {
    Reading.SETPOINT_1: 20.0,
    Reading.SETPOINT_2: -5.0,
    Reading.SETPOINT_3: 20.0,
    Reading.ACTIVE_SETPOINT: 1,
    Reading.CONTROL_SENSOR: 1,
    Reading.PUMP_STAGE: 3,
    Reading.EXTERNAL_TEMP: -4.0,
}
POWER_ON = {
    Reading.SETPOINT_1: 20.0,
    Reading.SETPOINT_2: 20.0,
    Reading.SETPOINT_3: 20.0,
    Reading.ACTIVE_SETPOINT: 0,
    Reading.CONTROL_SENSOR: 0,
    Reading.PUMP_STAGE: 2,
    Reading.EXTERNAL_TEMP: 21.0,
}


def status(line: bytes):
    return parse_status(line)


def judge(before, now, running_now=False, stop_commanded=False, restore=True, can_write=lambda s: True):
    return judge_gap(
        before,
        now,
        running_now=running_now,
        stop_commanded=stop_commanded,
        restore_enabled=restore,
        can_write=can_write,
    )


def test_a_lost_reply_while_values_are_restored_is_part_of_the_same_outage() -> None:
    """The root of two power_failure events for one outage: a silent read-back during restoration used to
    open a new gap whose baseline still said "running"."""
    outage = Outage()
    assert outage.begin(BEFORE, True, link_lost=True)
    assert not outage.begin(POWER_ON, None)  # more silence in the same outage: the baseline stays
    baseline = outage.judge()
    assert baseline[Reading.RUNNING] is True and baseline[Reading.SETPOINT_2] == -5.0
    assert not outage.begin(POWER_ON, True)  # a reply lost while restoring
    assert outage.phase is OutagePhase.JUDGING and not outage.open
    outage.close()
    assert outage.phase is OutagePhase.NONE and outage.baseline is None
    assert outage.begin(POWER_ON, False)  # the next gap is a new episode with a new baseline
    assert outage.baseline is not None and outage.baseline[Reading.RUNNING] is False


def test_a_link_lost_during_restoration_reopens_the_outage_with_the_original_baseline() -> None:
    outage = Outage()
    outage.begin(BEFORE, True, link_lost=True)
    outage.judge()
    outage.begin(POWER_ON, False, link_lost=True)
    assert outage.open and outage.baseline is not None
    assert outage.baseline[Reading.SETPOINT_2] == -5.0 and outage.baseline[Reading.RUNNING] is True


def test_the_dcs_own_changes_during_an_outage_are_no_lost_values() -> None:
    outage = Outage()
    outage.begin(BEFORE, True)
    outage.own_change(Reading.SETPOINT_2, 20.0)
    outage.own_change(Reading.RUNNING, False)
    verdict = judge(outage.judge(), {**BEFORE, Reading.SETPOINT_2: 20.0})
    assert not verdict.power_failure


def test_a_running_chiller_found_stopped_with_power_on_values_lost_power() -> None:
    verdict = judge({**BEFORE, Reading.RUNNING: True}, POWER_ON)
    assert verdict.power_failure and verdict.was_running
    assert verdict.lost == {
        Reading.SETPOINT_2: -5.0,
        Reading.ACTIVE_SETPOINT: 1,
        Reading.CONTROL_SENSOR: 1,
        Reading.PUMP_STAGE: 3,
    }
    # setpoints before the selection; never "running"
    assert [s for s, _, _ in verdict.restore] == [
        Setting.SETPOINT_2,
        Setting.ACTIVE_SETPOINT,
        Setting.CONTROL_SENSOR,
        Setting.PUMP_STAGE,
    ]


def test_nothing_changed_and_still_running_is_no_power_failure() -> None:
    assert not judge({**BEFORE, Reading.RUNNING: True}, BEFORE, running_now=True).power_failure


def test_a_stop_the_dcs_commanded_is_no_power_failure() -> None:
    assert not judge({**BEFORE, Reading.RUNNING: True}, BEFORE, stop_commanded=True).power_failure


def test_stopped_with_unchanged_values_is_a_power_failure_with_nothing_to_restore() -> None:
    verdict = judge({**BEFORE, Reading.RUNNING: True}, BEFORE, running_now=False)
    assert verdict.power_failure and verdict.lost == {} and verdict.restore == ()


def test_unknown_values_are_never_lost_and_an_absent_external_sensor_is_never_selected() -> None:
    now = {**POWER_ON, Reading.SETPOINT_2: None, Reading.EXTERNAL_TEMP: None}
    verdict = judge({**BEFORE, Reading.RUNNING: False}, now)
    assert Reading.SETPOINT_2 not in verdict.lost
    assert Reading.CONTROL_SENSOR in verdict.lost
    assert Setting.CONTROL_SENSOR not in [s for s, _, _ in verdict.restore]


def test_restoration_can_be_switched_off_and_respects_the_model_map() -> None:
    assert judge({**BEFORE, Reading.RUNNING: True}, POWER_ON, restore=False).restore == ()
    plan = judge({**BEFORE, Reading.RUNNING: True}, POWER_ON, can_write=lambda s: s is not Setting.PUMP_STAGE)
    assert Setting.PUMP_STAGE not in [s for s, _, _ in plan.restore]


def test_a_stop_nobody_at_the_dcs_asked_for_is_reported() -> None:
    watch = RunWatch()
    assert not watch.observe(True, in_gap=False)
    assert watch.observe(False, in_gap=False)  # front panel
    watch.commanded(True)
    watch.commanded(False)
    assert not watch.observe(False, in_gap=False)  # the DCS's own stop is no news


def test_after_a_front_panel_restart_the_next_stop_is_news_again() -> None:
    """Defect: once the DCS had stopped the chiller, every later stop counted as "commanded"."""
    watch = RunWatch()
    watch.commanded(False)
    assert not watch.observe(True, in_gap=False)  # restarted on the front panel
    assert watch.observe(False, in_gap=False)


def test_during_a_gap_nothing_is_concluded_and_the_gap_verdict_moves_the_baseline() -> None:
    watch = RunWatch(was_running=True)
    assert not watch.observe(False, in_gap=True)
    assert watch.was_running is True  # the gap is judged by judge_gap, with this baseline
    watch.after_gap(False)
    assert watch.was_running is False and not watch.observe(False, in_gap=False)
    watch.alarm()
    assert watch.was_running is None and not watch.observe(False, in_gap=False)


def test_a_stop_counts_only_when_the_chiller_says_it_is_stopped() -> None:
    assert stop_verdict(status(b"02 REMOTE STOP\r\n"), 0) is Verdict.DONE
    assert stop_verdict(status(b"02 REMOTE STOP\r\n"), None) is Verdict.DONE
    assert stop_verdict(status(b"03 REMOTE START\r\n"), 0) is Verdict.NOT_DONE
    assert stop_verdict(status(b"02 REMOTE STOP\r\n"), 1) is Verdict.NOT_DONE  # any sign of running
    assert stop_verdict(status(b"01 MANUAL START\r\n"), None) is Verdict.NOT_DONE
    assert stop_verdict(None, 0) is Verdict.UNKNOWN  # the operating state itself was not read
    assert stop_verdict(None, None) is Verdict.UNKNOWN
    assert stop_verdict(status(b"-01 LOW LEVEL ALARM\r\n"), 0) is Verdict.DONE  # an alarm stops the pump
    assert stop_verdict(status(b"-01 LOW LEVEL ALARM\r\n"), None) is Verdict.UNKNOWN


def test_a_reading_older_than_the_limit_is_no_reading() -> None:
    assert fresh(12.5, 100.0, 104.9, 5.0) == 12.5
    assert fresh(12.5, 100.0, 105.1, 5.0) is None
    assert fresh(12.5, None, 100.0, 5.0) is None


def test_the_safety_settings_have_safe_defaults_and_nonsense_is_refused() -> None:
    from julabo_fsm.app import JulaboConfig

    from trackerdcs.config import ConfigError

    cfg = JulaboConfig.from_config({"julabo": {"connection": "socket://127.0.0.1:1"}})
    assert cfg.driver.pacing_s >= 0.27  # the device's 250 ms plus the measured margin
    assert cfg.driver.unsafe_attempts >= 2 and 0 < cfg.driver.stale_after_s <= 10
    for bad in ({"unsafe_attempts": 0}, {"stale_after_s": 0}):
        with pytest.raises(ConfigError):
            JulaboConfig.from_config({"julabo": {"connection": "socket://127.0.0.1:1", **bad}})
