"""Verify, never assume: what the operator sees when the chiller drops replies, loses lines or keeps its own
pacing with jitter (issue 18 items 3 and 4). Every test runs the real service against the simulator process."""

from __future__ import annotations

import json
import time

import pytest

from trackerdcs.client import CommandFailed

from .conftest import Recorder, wait_status

READY = lambda s: s["state"] == "STOPPED" and s["setpoint_1"] is not None  # noqa: E731


@pytest.mark.timeout(60)
def test_a_reading_the_chiller_stops_answering_is_never_republished_as_fresh(make_sim, make_app, operator) -> None:
    sim = make_sim("--xon", "0")
    app = make_app(sim.tcp_url, heartbeat_s=1.0, stale_after_s=4.0)
    status = wait_status(operator, lambda s: READY(s) and s["bath_temp"] is not None, since=app.started)
    lost_from = time.time()
    sim.control("lose 100000 IN_PV_00")  # every bath query from now on goes unanswered; the rest is fine
    later = wait_status(operator, lambda s: s["ts"] > lost_from + 5.0, since=lost_from, timeout=10)
    assert later["connected"] is True and later["state"] == "STOPPED"  # the link itself is fine
    assert later["bath_temp"] is None, "a bath temperature not read for 5 s was published as current"
    assert status["ts"] - 4.0 <= status["bath_temp_read_at"] <= status["ts"]
    assert later["bath_temp_read_at"] < lost_from  # its true age is still there for anyone who wants it
    assert later["heating_power_read_at"] > lost_from, json.dumps(later)  # the rest is still read
    answered_from = time.time()
    sim.control("lose 0")  # the chiller answers again: the reading comes back with its new time
    back = wait_status(operator, lambda s: s["bath_temp"] is not None, since=answered_from, timeout=10)
    assert back["bath_temp_read_at"] >= answered_from


@pytest.mark.timeout(90)
@pytest.mark.serial  # measures line timing against the device's pacing
def test_the_default_pacing_has_margin_against_a_jittery_chiller(make_sim, make_app, operator) -> None:
    """The device times its 250 ms from when it finished reading the previous line, with jitter."""
    sim = make_sim("--xon", "0", "--jitter", "0.025", "--no-first-command-loss")
    app = make_app(sim.tcp_url)
    wait_status(operator, READY, since=app.started)
    before = dict(app.driver.counters)
    time.sleep(15)
    after = dict(app.driver.counters)
    (device,) = [c for c in sim.state()["connections"] if c["kind"] == "tcp"]
    queries = after["queries"] - before["queries"]
    lost = (after["silent"] - before["silent"]) + (after["garbled"] - before["garbled"])
    assert queries > 30
    # What the device saw is the measure of the pacing (a reply merely late under load is not its fault).
    assert device["pacing_violations"] <= max(1, 0.01 * device["commands"]), (
        f"the chiller saw {device['pacing_violations']} of {device['commands']} lines too early "
        f"({lost} of {queries} replies lost or garbled) at the default pacing"
    )


@pytest.mark.timeout(60)
def test_a_stop_whose_line_is_lost_is_sent_again_until_the_chiller_reads_back_stopped(
    make_sim, make_app, operator, sim_mode
) -> None:
    sim = make_sim(*sim_mode)
    app = make_app(sim.tcp_url)
    wait_status(operator, READY, since=app.started)
    operator.command("julabo", "start")
    assert sim.state()["running"] is True
    sim.control("lose 1 OUT_MODE_05")  # the device never reads the first stop
    reply = operator.command("julabo", "stop")
    assert reply["ok"] is True and reply["result"]["state"] == "STOPPED"
    assert sim.state()["running"] is False


@pytest.mark.timeout(60)
def test_a_stop_that_still_fails_is_an_alarm_event_not_only_a_failed_reply(make_sim, make_app, operator) -> None:
    sim = make_sim()
    events = Recorder(operator, "julabo/event")
    app = make_app(sim.tcp_url)
    wait_status(operator, READY, since=app.started)
    operator.command("julabo", "start")
    since = time.time()
    sim.control("lose 50 OUT_MODE_05")  # the chiller never hears a stop
    with pytest.raises(CommandFailed, match="did not stop"):
        operator.command("julabo", "stop")
    assert sim.state()["running"] is True
    event = events.wait("stop_failed", since, timeout=5)
    assert event["severity"] == "alarm" and event["attempts"] >= 2
    assert "RUNNING" in event["message"] or "START" in event["message"]
    assert len(events.events("stop_failed", since)) == 1
    sim.control("lose 0")


@pytest.mark.timeout(90)
def test_one_power_failure_is_one_event_even_when_a_reply_is_lost_while_values_are_restored(
    make_sim, make_app, operator, sim_mode
) -> None:
    sim = make_sim(*sim_mode, "--power-fail-seconds", "2.5", "--xon", "0")
    events = Recorder(operator, "julabo/event")
    app = make_app(sim.tcp_url)
    wait_status(operator, READY, since=app.started)
    operator.command("julabo", "set_setpoint", index=2, value=-5.0)
    operator.command("julabo", "select_setpoint", index=2)
    operator.command("julabo", "start")
    since = time.time()
    sim.control("power_fail")
    # When power is back: the first IN_SP_01 (the check after the outage) is answered, the second (the
    # read-back of the restored setpoint) never reaches the chiller.
    sim.control("lose 1 IN_SP_01 1")
    event = events.wait("power_failure", since, timeout=30)
    assert event["severity"] == "alarm" and event["was_running"] is True
    assert event["restored"] == {"setpoint_2": -5.0, "active_setpoint": 1}
    time.sleep(8)
    kinds = [e["kind"] for e in events.docs(since)]
    assert kinds.count("power_failure") == 1, [e["message"] for e in events.docs(since)]
    state = sim.state()
    assert state["running"] is False and state["setpoints"][1] == -5.0 and state["active"] == 1


@pytest.mark.timeout(90)
def test_values_lost_to_a_power_failure_are_restored_even_when_a_write_is_lost(make_sim, make_app, operator) -> None:
    sim = make_sim("--power-fail-seconds", "2.5", "--xon", "0")
    events = Recorder(operator, "julabo/event")
    app = make_app(sim.tcp_url)
    wait_status(operator, READY, since=app.started)
    operator.command("julabo", "set_setpoint", index=2, value=-5.0)
    operator.command("julabo", "select_setpoint", index=2)
    since = time.time()
    sim.control("power_fail")
    sim.control("lose 1 OUT_SP_01")  # the first restoring write never reaches the chiller
    event = events.wait("power_failure", since, timeout=30)
    assert event["restored"] == {"setpoint_2": -5.0, "active_setpoint": 1}, event
    state = sim.state()
    assert state["setpoints"][1] == -5.0 and state["active"] == 1


@pytest.mark.timeout(60)
def test_the_status_follows_the_link_at_once_after_a_reconnect(make_sim, make_app, operator) -> None:
    sim = make_sim()
    statuses = Recorder(operator, "julabo/status")
    events = Recorder(operator, "julabo/event")
    app = make_app(sim.tcp_url)
    wait_status(operator, READY, since=app.started)
    since = time.time()
    sim.control("drop")
    back = events.wait("reconnected", since, timeout=15)
    doc = wait_status(operator, lambda s: s["connected"], since=since, timeout=10)
    assert doc["ts"] - back["ts"] < 1.0, f"status said DISCONNECTED {doc['ts'] - back['ts']:.2f} s after reconnected"
    assert doc["state"] == "STOPPED"
    # nothing read before the drop is published as current after it
    first = next(d for d in statuses.docs(since) if d["connected"])
    assert first["bath_temp"] is None or first["bath_temp_read_at"] >= back["ts"] - 0.5


@pytest.mark.timeout(60)
def test_the_operators_own_reconnect_is_not_an_alarm(make_sim, make_app, operator) -> None:
    sim = make_sim()
    events = Recorder(operator, "julabo/event")
    app = make_app(sim.tcp_url)
    wait_status(operator, READY, since=app.started)
    since = time.time()
    reply = operator.command("julabo", "reconnect")
    assert reply["result"]["connected"] is True
    events.wait("reconnected", since)
    (event,) = events.events("disconnected", since)
    assert event["severity"] in ("info", "warning") and event["requested"] is True
    assert "requested" in event["message"]
    assert not [e for e in events.docs(since) if e["severity"] == "alarm"]
