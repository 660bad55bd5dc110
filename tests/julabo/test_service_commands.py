"""The julabo service over real MQTT against the simulated chiller on TCP: status and every command."""

from __future__ import annotations

import time

import pytest

from trackerdcs.client import CommandFailed

from .conftest import Recorder, wait_event, wait_status

STATUS_FIELDS = {
    "state", "connected", "bath_temp", "external_temp", "heating_power", "setpoint", "setpoint_1", "setpoint_2",
    "setpoint_3", "active_setpoint", "control_sensor", "pump_stage", "status_code", "status_text", "remote",
    "model", "bath_temp_read_at", "external_temp_read_at", "heating_power_read_at", "status_read_at", "ts",
}  # fmt: skip


@pytest.fixture
def chiller(make_sim, make_app, operator, sim_mode):
    sim = make_sim(*sim_mode, "--tau", "5", "--xon", "0.3", "--setpoint-range", "-50", "100")
    app = make_app(sim.tcp_url)
    status = wait_status(operator, lambda s: s["state"] == "STOPPED" and s["setpoint_1"] is not None, since=app.started)
    return sim, app, status


@pytest.mark.timeout(60)
def test_operator_sees_every_reading_in_the_status(chiller) -> None:
    sim, _, status = chiller
    assert set(status) == STATUS_FIELDS
    assert status["connected"] is True and status["remote"] is True
    assert status["status_code"] == 2 and status["status_text"] == "REMOTE STOP"
    assert abs(status["bath_temp"] - sim.state()["bath_temp"]) < 0.5
    assert status["setpoint"] == status["setpoint_1"] == 20.0
    assert status["active_setpoint"] == 1 and status["control_sensor"] == "internal"
    assert status["pump_stage"] == 2 and isinstance(status["external_temp"], float)
    assert status["model"].startswith("JULABO")


@pytest.mark.timeout(60)
def test_start_set_and_stop_drive_the_chiller(chiller, operator) -> None:
    sim, _, _ = chiller
    reply = operator.command("julabo", "set_setpoint", index=1, value=30.5)
    assert reply["result"] == {"index": 1, "value": 30.5}
    assert sim.state()["setpoints"][0] == 30.5
    operator.command("julabo", "start")
    assert sim.state()["running"] is True
    status = wait_status(operator, lambda s: s["state"] == "RUNNING" and s["bath_temp"] > 22.0, timeout=15)
    assert status["heating_power"] > 0 and status["setpoint"] == 30.5
    operator.command("julabo", "stop")
    assert sim.state()["running"] is False
    wait_status(operator, lambda s: s["state"] == "STOPPED")


@pytest.mark.timeout(60)
def test_setpoint_selection_sensor_and_pump_stage_are_written_and_read_back(chiller, operator) -> None:
    sim, _, _ = chiller
    operator.command("julabo", "set_setpoint", index=3, value=-12.25)
    assert operator.command("julabo", "select_setpoint", index=3)["result"]["setpoint"] == -12.25
    operator.command("julabo", "control_sensor", sensor="external")
    operator.command("julabo", "pump_stage", stage=4)
    state = sim.state()
    assert (state["active"], state["external_control"], state["pump_stage"]) == (2, True, 4)
    status = wait_status(
        operator, lambda s: s["active_setpoint"] == 3 and s["control_sensor"] == "external" and s["pump_stage"] == 4
    )
    assert status["setpoint"] == status["setpoint_3"] == -12.25
    refreshed = operator.command("julabo", "refresh")["result"]
    assert refreshed["setpoint_3"] == -12.25 and refreshed["state"] == "STOPPED"


@pytest.mark.timeout(60)
def test_setpoints_outside_the_configured_limits_are_refused_without_touching_the_chiller(chiller, operator) -> None:
    sim, _, _ = chiller
    with pytest.raises(CommandFailed, match="above the maximum 40"):
        operator.command("julabo", "set_setpoint", index=1, value=60.0)
    with pytest.raises(CommandFailed, match="below the minimum -30"):
        operator.command("julabo", "set_setpoint", index=2, value=-31.0)
    assert sim.state()["setpoints"] == [20.0, 20.0, 20.0]
    assert sum(c["commands"] for c in sim.state()["connections"]) > 0


BAD_INPUT = [
    ("set_setpoint", b'{"index": 4, "value": 10}', "above the maximum"),
    ("set_setpoint", b'{"index": 1, "value": "cold"}', "must be a number"),
    ("set_setpoint", b'{"index": 1}', "missing argument 'value'"),
    ("set_setpoint", b'{"index": 1, "value": NaN}', "malformed JSON"),
    ("control_sensor", b'{"sensor": "both"}', "not one of"),
    ("pump_stage", b'{"stage": 0}', "below the minimum"),
    ("select_setpoint", b'{"index": 1.5}', "must be an integer"),
    ("start", b"{not json", "malformed JSON"),
    ("stop", b'{"force": true}', "unknown argument"),
    ("warp_speed", b"{}", "unknown command"),
]


@pytest.mark.timeout(60)
def test_bad_input_gets_a_clear_error_and_nothing_reaches_the_chiller(chiller, operator) -> None:
    sim, app, _ = chiller
    before = sim.state()
    for command, payload, error in BAD_INPUT:
        reply = app.service.execute(command, payload)
        assert reply["ok"] is False and error in reply["error"], (command, payload, reply)
    with pytest.raises(CommandFailed, match="must be a number"):  # the same over MQTT
        operator.command("julabo", "set_setpoint", index=1, value="cold")
    after = sim.state()
    for key in ("setpoints", "running", "active", "external_control", "pump_stage"):
        assert before[key] == after[key]
    assert operator.command("julabo", "refresh")["ok"]  # and the service carries on


@pytest.mark.timeout(60)
def test_external_control_is_refused_when_no_external_pt100_is_plugged_in(chiller, operator) -> None:
    sim, _, _ = chiller
    sim.control("external off")
    with pytest.raises(CommandFailed, match="no external Pt100"):
        operator.command("julabo", "control_sensor", sensor="external")
    assert sim.state()["external_control"] is False
    wait_status(operator, lambda s: s["external_temp"] is None)


@pytest.mark.timeout(60)
def test_a_value_the_chiller_refuses_is_reported_with_its_status_text(make_sim, make_app, operator) -> None:
    sim = make_sim("--setpoint-range", "-20", "30", "--no-first-command-loss")
    app = make_app(sim.tcp_url)
    wait_status(operator, lambda s: s["state"] == "STOPPED" and s["setpoint_1"] is not None, since=app.started)
    with pytest.raises(CommandFailed, match="VALUE TOO LARGE"):
        operator.command("julabo", "set_setpoint", index=1, value=35.0)  # inside our limits, beyond the device's
    assert operator.status("julabo")["state"] == "STOPPED"


@pytest.mark.timeout(60)
def test_in_manual_mode_remote_commands_are_refused_with_the_reason(make_sim, make_app, operator) -> None:
    sim = make_sim("--manual")
    app = make_app(sim.tcp_url)
    wait_status(operator, lambda s: s["remote"] is False and s["status_text"] == "MANUAL STOP", since=app.started)
    for command, args in (("start", {}), ("set_setpoint", {"index": 1, "value": 10.0})):
        with pytest.raises(CommandFailed, match="manual mode"):
            operator.command("julabo", command, args)
    assert sim.state()["running"] is False


@pytest.mark.timeout(60)
def test_alarm_is_published_as_event_and_state_and_blocks_start(chiller, operator) -> None:
    sim, _, _ = chiller
    operator.command("julabo", "start")
    since = time.time()
    sim.control("alarm low_level")
    event = wait_event(operator, "alarm", since)
    assert event["severity"] == "alarm" and event["status_code"] == -1 and event["status_text"] == "LOW LEVEL ALARM"
    status = wait_status(operator, lambda s: s["state"] == "ALARM")
    assert status["status_code"] == -1
    with pytest.raises(CommandFailed, match="alarm"):
        operator.command("julabo", "start")
    sim.control("clear")
    wait_event(operator, "alarm_cleared", since)
    wait_status(operator, lambda s: s["state"] == "STOPPED")
    assert sim.state()["running"] is False


@pytest.mark.timeout(60)
def test_overtemperature_alarm_is_raised(chiller, operator) -> None:
    sim, _, _ = chiller
    since = time.time()
    sim.control("alarm overtemp")
    event = wait_event(operator, "alarm", since)
    assert event["status_code"] == -14 and "PROTECTOR" in event["status_text"]


@pytest.mark.timeout(60)
def test_the_status_follows_the_link_at_once_and_is_complete_after_the_first_read_out(
    make_sim, make_app, operator
) -> None:
    """The first connected document comes as soon as STATUS is read: what is not read yet is null, never
    guessed; the full read-out (11 queries) completes it."""
    sim = make_sim()
    app = make_app(sim.tcp_url)
    first = wait_status(operator, lambda s: s["connected"], since=app.started)
    assert first["state"] == "STOPPED" and first["status_text"] == "REMOTE STOP"
    for name in ("bath_temp", "external_temp", "heating_power"):
        assert first[name] is None or first[f"{name}_read_at"] is not None
    full = wait_status(
        operator,
        lambda s: None not in (s["bath_temp"], s["setpoint_1"], s["pump_stage"], s["control_sensor"]),
        since=app.started,
        timeout=6,
    )
    assert full["ts"] - first["ts"] < 5.0


@pytest.mark.timeout(60)
def test_a_front_panel_stop_after_a_front_panel_restart_is_reported(chiller, operator) -> None:
    """The DCS stopped the chiller once; someone restarted it on the front panel and later stopped it there:
    that second stop is news to the operator (and a power cut after the restart would be too)."""
    sim, _, _ = chiller
    events = Recorder(operator, "julabo/event")
    operator.command("julabo", "start")
    operator.command("julabo", "stop")
    sim.control("panel start")
    wait_status(operator, lambda s: s["state"] == "RUNNING", since=time.time())
    since = time.time()
    sim.control("panel stop")
    event = events.wait("stopped_externally", since, timeout=10)
    assert event["severity"] == "warning"
