"""What the operator gets when the cable is pulled, the power fails, or the chiller sits on a serial pty."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from trackerdcs.client import CommandFailed

from .conftest import BIN, Recorder, wait_event, wait_status
from .service_config import julabo_config


@pytest.mark.timeout(60)
def test_unplugged_cable_means_disconnected_with_an_alarm_and_replug_recovers(make_sim, make_app, operator) -> None:
    sim = make_sim("--xon", "0.2")
    events = Recorder(operator, "julabo/event")
    app = make_app(sim.tcp_url)
    wait_status(operator, lambda s: s["state"] == "STOPPED" and s["setpoint_1"] is not None, since=app.started)
    operator.command("julabo", "set_setpoint", index=1, value=15.0)
    since = time.time()
    events: list[dict] = []  # every event from here on (the client's latest-message cache keeps only one)
    operator.watch("julabo/event", lambda m: events.append(m.json()) if m.payload else None)
    sim.control("unplug")
    event = wait_event(operator, "disconnected", since)
    assert event["severity"] == "alarm" and "no reply" in event["reason"]
    status = wait_status(operator, lambda s: s["state"] == "DISCONNECTED", since=since)
    assert status["connected"] is False and status["bath_temp"] is None and status["setpoint_1"] is None
    with pytest.raises(CommandFailed, match="not connected"):
        operator.command("julabo", "start")
    sim.control("replug")
    wait_event(operator, "reconnected", since, timeout=15)
    status = wait_status(operator, lambda s: s["state"] == "STOPPED" and s["setpoint_1"] is not None, since=since)
    assert status["setpoint_1"] == 15.0  # nothing was lost: no power-failure verdict
    time.sleep(1.0)  # a verdict would follow the reconnect within a cycle
    kinds = [e["kind"] for e in events if e["ts"] >= since]
    assert "disconnected" in kinds and "reconnected" in kinds, kinds  # the watch really saw the events
    assert "power_failure" not in kinds, kinds


@pytest.mark.timeout(60)
def test_after_a_power_failure_the_chiller_stays_stopped_and_the_operator_is_told(
    make_sim, make_app, operator, sim_mode
) -> None:
    sim = make_sim(*sim_mode, "--power-fail-seconds", "2.5")
    app = make_app(sim.tcp_url)
    wait_status(operator, lambda s: s["state"] == "STOPPED" and s["setpoint_1"] is not None, since=app.started)
    operator.command("julabo", "set_setpoint", index=2, value=-5.0)
    operator.command("julabo", "select_setpoint", index=2)
    operator.command("julabo", "start")
    wait_status(operator, lambda s: s["state"] == "RUNNING")
    since = time.time()
    sim.control("power_fail")
    event = wait_event(operator, "power_failure", since, timeout=20)
    assert event["severity"] == "alarm" and event["was_running"] is True
    assert event["restored"] == {"setpoint_2": -5.0, "active_setpoint": 1}  # values re-sent, never a start
    status = wait_status(operator, lambda s: s["state"] == "STOPPED" and s["setpoint"] == -5.0, since=since)
    assert status["active_setpoint"] == 2
    time.sleep(2.0)  # the service must not restart the chiller on its own
    state = sim.state()
    assert state["running"] is False and state["setpoints"][1] == -5.0 and state["active"] == 1
    assert operator.status("julabo")["state"] == "STOPPED"
    operator.command("julabo", "start")  # the operator decides
    assert sim.state()["running"] is True


@pytest.mark.timeout(60)
def test_reconnect_command_and_automatic_reconnect_after_a_bridge_drop(make_sim, make_app, operator) -> None:
    sim = make_sim()
    app = make_app(sim.tcp_url)
    wait_status(operator, lambda s: s["state"] == "STOPPED" and s["setpoint_1"] is not None, since=app.started)
    since = time.time()
    sim.control("drop")
    wait_event(operator, "disconnected", since)
    wait_event(operator, "reconnected", since, timeout=15)
    reply = operator.command("julabo", "reconnect")
    assert reply["result"]["connected"] is True and reply["result"]["state"] == "STOPPED"
    wait_status(operator, lambda s: s["state"] == "STOPPED", since=time.time())


@pytest.mark.timeout(60)
def test_the_service_works_over_a_serial_pty(make_sim, make_app, operator, tmp_path: Path) -> None:
    link = tmp_path / "ttyJULABO"
    sim = make_sim("--pty-link", str(link), "--tcp-port", "-1", "--xon", "0.3")
    assert link.is_symlink()
    app = make_app(str(link))
    status = wait_status(operator, lambda s: s["state"] == "STOPPED" and s["pump_stage"] is not None, since=app.started)
    assert status["model"].startswith("JULABO")
    operator.command("julabo", "set_setpoint", index=1, value=25.0)
    operator.command("julabo", "start")
    assert sim.state()["running"] is True and sim.state()["setpoints"][0] == 25.0
    since = time.time()
    sim.control("unplug")
    wait_status(operator, lambda s: s["state"] == "DISCONNECTED", since=since)
    sim.control("replug")
    wait_status(operator, lambda s: s["state"] == "RUNNING", since=since, timeout=15)


@pytest.mark.timeout(60)
def test_no_chiller_at_startup_is_disconnected_and_retried_with_backoff(broker, make_app, operator) -> None:
    app = make_app("socket://127.0.0.1:9", reconnect_min_s=0.2, reconnect_max_s=0.8)
    status = wait_status(operator, lambda s: s["state"] == "DISCONNECTED", since=app.started)
    assert status["connected"] is False
    time.sleep(1.5)
    assert app.driver.connect_attempts >= 3
    reply = operator.command("julabo", "reconnect")["result"]
    assert reply["connected"] is False and "cannot open" in reply["error"]


@pytest.mark.timeout(60)
def test_julabo_fsm_process_runs_from_config_and_goes_offline_on_sigterm(broker, make_sim, monitor, tmp_path) -> None:
    sim = make_sim()
    config = julabo_config(sim.tcp_url)
    config["mqtt"] = {"client_id": "julabo-fsm-process-test"}
    path = tmp_path / "julabo.yml"
    path.write_text(yaml.safe_dump(config))
    started = time.time()
    proc = subprocess.Popen(
        [str(BIN / "julabo-fsm"), "--config", str(path)],
        env={**os.environ, **broker.env("julabo")},
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        monitor.wait_for("julabo/availability", lambda m: m.payload == b"online", 10)
        wait_status(monitor, lambda s: s["state"] == "STOPPED", since=started)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        monitor.wait_for("julabo/availability", lambda m: m.payload == b"offline", 5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        assert proc.stderr is not None
        log = proc.stderr.read().decode()
        proc.stderr.close()
    assert "connected to JULABO" in log, log[-2000:]


def test_bad_config_is_refused_with_a_clear_message(tmp_path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("julabo:\n  connection: socket://127.0.0.1:1\n  model: presto-9000\n")
    result = subprocess.run(
        [str(BIN / "julabo-fsm"), "--config", str(path)], capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 2 and "unknown Julabo model" in result.stderr
