"""A service process survives broker restarts, announces its death, and only authorised users can command it.

Each test here runs the demo service (tests/foundation/demo_service.py) as a real process against its own
real Mosquitto, because they kill and restart things.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from trackerdcs.client import DcsClient, DcsError, NoReply
from trackerdcs.service import build_client
from trackerdcs_devstack.localbroker import LocalBroker

DEMO = Path(__file__).with_name("demo_service.py")


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    b = LocalBroker(tmp_path / "broker", tmp_path / "secrets")
    b.start()
    yield b
    b.stop()


def start_demo(broker: LocalBroker, root: str = "caen") -> subprocess.Popen[bytes]:
    env = {**os.environ, **broker.env(root), "DCS_MQTT_CLIENT_ID": f"demo-{uuid.uuid4().hex[:6]}"}
    return subprocess.Popen([sys.executable, str(DEMO), root], env=env, stderr=subprocess.PIPE)


@pytest.fixture
def demo(own_broker: LocalBroker) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_demo(own_broker)
    yield proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)


def wait_online(client: DcsClient, after: float = 0.0, timeout: float = 10.0) -> float:
    msg = client.wait_for("caen/availability", lambda m: m.payload == b"online" and m.received >= after, timeout)
    return msg.received


def test_a_killed_service_is_announced_offline_by_its_last_will(own_broker, demo):
    with DcsClient(own_broker.settings("monitor")) as mon:
        wait_online(mon)
        demo.send_signal(signal.SIGKILL)
        demo.wait(5)
        msg = mon.wait_for("caen/availability", lambda m: m.payload == b"offline", timeout=30)
        assert msg.payload == b"offline"
    with DcsClient(own_broker.settings("monitor")) as late:  # and it is retained for latecomers
        assert late.wait_for("caen/availability", timeout=3).payload == b"offline"


def test_a_stopped_service_says_offline_at_once(own_broker, demo):
    with DcsClient(own_broker.settings("monitor")) as mon:
        wait_online(mon)
        t0 = time.time()
        demo.terminate()
        assert demo.wait(10) == 0
        mon.wait_for("caen/availability", lambda m: m.payload == b"offline", timeout=3)
        assert time.time() - t0 < 3


def test_after_a_broker_crash_the_service_reconnects_resubscribes_and_republishes(own_broker, demo):
    with DcsClient(own_broker.settings("operator")) as op:
        wait_online(op)
        op.command("caen", "on", brightness=30)
    own_broker.kill()
    t_restart = time.time()
    own_broker.start()
    with DcsClient(own_broker.settings("operator")) as op:
        back = wait_online(op, after=t_restart, timeout=15)
        status = op.wait_for("caen/status", lambda m: m.received >= t_restart, timeout=10).json()
        assert status["state"] == "ON" and status["brightness"] == 30
        assert back - t_restart < 5
        reply = op.command("caen", "off")  # commands work again: it resubscribed
        assert reply["ok"]
        assert op.wait_for("caen/status", lambda m: m.json()["state"] == "OFF", timeout=5)


def test_a_read_only_user_cannot_command_a_service(own_broker, demo):
    with DcsClient(own_broker.settings("operator")) as op:
        wait_online(op)
        before = op.status("caen")["actions"]
    with DcsClient(own_broker.settings("monitor")) as mon, pytest.raises(NoReply):
        mon.command("caen", "on", timeout=2)  # Mosquitto drops the denied publish silently
    with DcsClient(own_broker.settings("operator")) as op:
        time.sleep(0.5)
        assert op.status("caen")["actions"] == before


@pytest.mark.parametrize("account", ["julabo", "ph2acf", "sensors", "telegraf", "monitor"])
def test_a_service_account_cannot_command_another_service(own_broker, demo, account):
    """Judged on the lamp itself: the account gets no read on the reply topics, so "no reply" alone would
    prove nothing. The command is published raw (QoS 1, acknowledged by the broker) and the lamp's own
    action counter, read by the operator, must not move."""
    with DcsClient(own_broker.settings("operator")) as op:
        wait_online(op)
        before = op.status("caen")
        assert before["state"] == "OFF" and before["actions"] == 0
        with DcsClient(own_broker.settings(account)) as other:
            other.client.publish("caen/cmd/on", b'{"brightness": 80}', qos=1).wait_for_publish(5)
        # the operator's own command right after: once its reply is in, the one before it was handled (or dropped)
        assert op.command("caen", "fail", timeout=5, check=False)["ok"] is False
        time.sleep(0.5)
        after = op.status("caen")
        assert after["state"] == "OFF" and after["actions"] == 0, f"{account} switched the lamp: {after}"


def test_anonymous_clients_and_wrong_passwords_are_refused(own_broker):
    with pytest.raises(DcsError, match=r"refused|cannot reach"):
        DcsClient(own_broker.settings(None), connect_timeout=3).connect()
    bad = own_broker.settings("operator", password_file=None, password="wrong")
    with pytest.raises(DcsError, match=r"refused|cannot reach"):
        DcsClient(bad, connect_timeout=3).connect()


def test_a_service_cannot_be_impersonated_by_another_account(own_broker, demo):
    """Only the caen account may publish caen/status: a forged status from another user never arrives."""
    forged = build_client(own_broker.settings("julabo"), "forger")
    ok = threading.Event()
    forged.on_connect = lambda *a: ok.set()
    forged.connect(own_broker.host, own_broker.port)
    forged.loop_start()
    assert ok.wait(5)
    with DcsClient(own_broker.settings("monitor")) as mon:
        wait_online(mon)
        t0 = time.time()
        forged.publish("caen/status", b'{"state": "HV_ON"}', qos=1, retain=True)
        with pytest.raises(TimeoutError):
            mon.wait_for("caen/status", lambda m: m.received >= t0 and m.json()["state"] == "HV_ON", timeout=1.5)
    forged.loop_stop()
    forged.disconnect()


def test_a_command_sent_while_the_service_is_down_is_not_carried_out_when_it_comes_back(own_broker):
    env_id = {"DCS_MQTT_CLIENT_ID": "demo-fixed-id"}  # same client id: a persistent session would be resumed
    env = {**os.environ, **own_broker.env("caen"), **env_id}
    first = subprocess.Popen([sys.executable, str(DEMO), "caen"], env=env, stderr=subprocess.DEVNULL)
    with DcsClient(own_broker.settings("operator")) as op:
        wait_online(op)
        first.terminate()
        first.wait(10)
        op.wait_for("caen/availability", lambda m: m.payload == b"offline", timeout=10)
        op.client.publish("caen/cmd/on", b'{"brightness": 99}', qos=1).wait_for_publish(5)  # raw: no expiry
        t0 = time.time()
        second = subprocess.Popen([sys.executable, str(DEMO), "caen"], env=env, stderr=subprocess.DEVNULL)
        try:
            wait_online(op, after=t0)
            time.sleep(1.0)
            assert op.status("caen")["state"] == "OFF"
            assert op.status("caen")["actions"] == 0
        finally:
            second.terminate()
            second.wait(10)


def test_a_retained_command_is_refused_and_deleted_so_no_restart_replays_it(own_broker, demo):
    with DcsClient(own_broker.settings("operator")) as op:
        wait_online(op)
        op.subscribe(["caen/reply"])
        time.sleep(0.2)
        op.client.publish("caen/cmd/on", b'{"id": "sticky"}', qos=1, retain=True)
        reply = op.wait_for("caen/reply", lambda m: m.json()["id"] == "sticky", timeout=5).json()
        assert reply["ok"] is False and "retained" in reply["error"]
        assert op.status("caen")["actions"] == 0
    with DcsClient(own_broker.settings("monitor")) as late:
        late.subscribe(["caen/cmd/#"])
        time.sleep(0.5)
        assert late.latest("caen/cmd/#") == {}
