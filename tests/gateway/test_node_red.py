"""Node-RED flows: mocha unit tests (node-red-node-test-helper) and the real Node-RED with a real Mosquitto."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from gateway_nodered import NODE_RED, NodeRed, node_red_ready

from trackerdcs.client import DcsClient

pytestmark = pytest.mark.skipif(node_red_ready() is not None, reason=str(node_red_ready()))


def test_interlock_logic_and_flows_pass_their_mocha_specs():
    r = subprocess.run(
        ["npx", "--no-install", "mocha", "--timeout", "10000", "--exit", "test/**/*_spec.js"],
        cwd=NODE_RED,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passing" in r.stdout and " failing" not in r.stdout


@pytest.fixture(scope="module")
def node_red(broker, tmp_path_factory):
    nr = NodeRed(
        broker,
        tmp_path_factory.mktemp("node-red"),
        client_id="nr-test-gateway",
        INTERLOCK_LV_OFF_DELAY_S="0.5",
        INTERLOCK_STALE_S="20",
        INTERLOCK_BATH_TEMP_MAX="25",
    )
    nr.start()
    with DcsClient(broker.settings("monitor", client_id="nr-ready-probe")) as probe:
        probe.wait_for("interlock/availability", lambda m: m.payload == b"online", 20)
    yield nr
    nr.stop()


def acknowledge(op: DcsClient, operator: str = "pytest") -> dict:
    """Publish interlock/cmd/acknowledge and return the reply from interlock/reply (matched by id).

    Plain publish + interlock/reply: the mosquitto ACL does not (yet) let user nodered write dcs/reply/#, so
    DcsClient.command's MQTT v5 response topic would not be answered.
    """
    ident = f"ack-{time.time_ns()}"
    op.subscribe(["interlock/reply"])
    op.client.publish("interlock/cmd/acknowledge", json.dumps({"id": ident, "operator": operator}), qos=1)
    return op.wait_for("interlock/reply", lambda m: m.json().get("id") == ident, 5).json()


def chiller(ts: float, **over) -> bytes:
    doc = {"state": "RUNNING", "connected": True, "bath_temp": -20.0, "external_temp": None, "ts": ts, **over}
    return json.dumps(doc).encode()


def test_flow_credentials_are_encrypted_and_hold_no_password(node_red, broker):
    cred = Path(node_red.env["NODE_RED_USER_DIR"]) / "flows_cred.json"
    text = cred.read_text()
    assert set(json.loads(text)) == {"$"}, "encrypted by credentialSecret"
    assert broker.password("nodered") not in text
    assert broker.password("nodered") not in (NODE_RED / "flows.json").read_text()


def test_editor_and_admin_api_are_off_without_an_admin_password_hash(node_red):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{node_red.url}/flows", timeout=5)
    assert err.value.code == 404


def test_editor_requires_the_admin_login_when_a_hash_is_configured(broker, tmp_path):
    hashed = subprocess.run(
        [str(NODE_RED / "hash-password")], input="correct horse", capture_output=True, text=True, check=True
    ).stdout.strip()
    nr = NodeRed(broker, tmp_path, client_id="nr-test-admin", NODE_RED_ADMIN_HASH=hashed)
    nr.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{nr.url}/flows", timeout=5)
        assert err.value.code == 401
        form = urllib.parse.urlencode(
            {
                "client_id": "node-red-admin",
                "grant_type": "password",
                "scope": "*",
                "username": "admin",
                "password": "correct horse",
            }
        ).encode()
        with urllib.request.urlopen(f"{nr.url}/auth/token", data=form, timeout=5) as r:
            token = json.loads(r.read())["access_token"]
        req = urllib.request.Request(f"{nr.url}/flows", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert any(n.get("type") == "dcs-interlock" for n in json.loads(r.read()))
    finally:
        nr.stop()


@pytest.mark.serial  # times the interlock in milliseconds
def test_chiller_stop_switches_hv_off_within_500_ms_then_lv_off_and_latches(node_red, broker, artifacts):
    reactions = []
    with (
        DcsClient(broker.settings("julabo", client_id="nr-test-julabo")) as julabo,
        DcsClient(broker.settings("operator", client_id="nr-test-operator")) as op,
    ):
        op.subscribe(["caen/cmd/#", "interlock/status"])  # no overlap with the watched interlock/event
        events: list = []
        op.watch("interlock/event", events.append)
        for _ in range(10):
            julabo.client.publish("julabo/status", chiller(time.time()), qos=1, retain=True)
            op.wait_for("interlock/status", lambda m: m.json()["conditions"] == [], 10)
            ack = acknowledge(op)
            assert ack["ok"], ack
            op.wait_for("interlock/status", lambda m: m.json()["state"] == "OK", 5)
            hv_seen: list[float] = []
            op.watch("caen/cmd/hv_off", lambda m, seen=hv_seen: seen.append(time.time()))
            t0 = time.time()
            julabo.client.publish("julabo/status", chiller(t0, state="STOPPED"), qos=1, retain=True)
            deadline = time.time() + 5
            while not hv_seen and time.time() < deadline:
                time.sleep(0.001)
            assert hv_seen, "no caen/cmd/hv_off within 5 s"
            reactions.append(hv_seen[0] - t0)
            op.wait_for("caen/cmd/lv_off", lambda m, t=t0: m.received > t, 5)
            status = op.wait_for("interlock/status", lambda m: m.json()["state"] == "TRIPPED", 5).json()
            assert status["active"] == ["chiller_not_running"]
            trips = [m.json() for m in events if m.received >= t0 and m.json().get("kind") == "trip"]
            assert [(e["reason"], e["severity"]) for e in trips] == [("chiller_not_running", "alarm")]
        # still latched after the chiller runs again; an acknowledgement is refused while it is stopped
        julabo.client.publish("julabo/status", chiller(time.time(), state="STOPPED"), qos=1, retain=True)
        refused = acknowledge(op)
        assert not refused["ok"] and "chiller_not_running" in refused["error"]
        julabo.client.publish("julabo/status", b"", qos=1, retain=True).wait_for_publish(5)
    p50, worst = statistics.median(reactions), max(reactions)
    (artifacts / "interlock_reaction.json").write_text(
        json.dumps({"reactions_s": reactions, "p50_s": p50, "max_s": worst}, indent=2)
    )
    assert worst < 0.5, f"interlock reaction p50 {p50 * 1000:.1f} ms, max {worst * 1000:.1f} ms"


def test_dew_point_above_margin_switches_hv_but_not_lv_off(node_red, broker):
    with (
        DcsClient(broker.settings("julabo", client_id="nr-test-julabo2")) as julabo,
        DcsClient(broker.settings("sensors", client_id="nr-test-sensors")) as sensors,
        DcsClient(broker.settings("operator", client_id="nr-test-operator2")) as op,
    ):
        op.subscribe(["caen/cmd/#", "interlock/status"])  # no overlap with the watched interlock/event
        events: list = []
        op.watch("interlock/event", events.append)
        julabo.client.publish("julabo/status", chiller(time.time()), qos=1, retain=True)
        sensors.client.publish(
            "env/box", json.dumps({"temperature": 21.0, "humidity": 2.0, "ts": time.time()}), qos=1, retain=True
        )
        op.wait_for("interlock/status", lambda m: m.json()["conditions"] == [], 10)
        assert acknowledge(op)["ok"]
        op.wait_for("interlock/status", lambda m: m.json()["state"] == "OK", 5)
        t0 = time.time()
        sensors.client.publish(
            "env/box", json.dumps({"temperature": 21.0, "humidity": 45.0, "ts": t0}), qos=1, retain=True
        )
        op.wait_for("caen/cmd/hv_off", lambda m: m.received >= t0, 5)
        time.sleep(1.0)
        trips = [m.json() for m in events if m.received >= t0 and m.json().get("kind") == "trip"]
        assert [(e["reason"], e["action"]) for e in trips] == [
            ("dewpoint:box", "hv_off")
        ]  # longer than the LV-off delay of this Node-RED
        assert all(m.received < t0 for m in op.latest("caen/cmd/lv_off").values()), "no LV off for dew point"
        sensors.client.publish("env/box", b"", qos=1, retain=True).wait_for_publish(5)
        julabo.client.publish("julabo/status", b"", qos=1, retain=True).wait_for_publish(5)
