"""The MQTT contract every service keeps (docs/mqtt-api.md), checked against a real Mosquitto with auth and ACL.

The service under test is an in-process :class:`trackerdcs.service.Service` logged in as the ``caen`` user
(the ACL only lets a service publish under its own root).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from trackerdcs.client import DcsClient, Message
from trackerdcs.commands import Arg, CommandError
from trackerdcs.deadband import Deadband
from trackerdcs.service import Service, build_client
from trackerdcs_devstack.localbroker import LocalBroker


class Lamp:
    """A device double that records every action the service carries out."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, dict]] = []


@pytest.fixture
def lamp() -> Lamp:
    return Lamp()


@pytest.fixture
def service(broker: LocalBroker, lamp: Lamp) -> Iterator[Service]:
    svc = Service(
        "caen",
        broker.settings("caen", client_id=f"svc-{uuid.uuid4().hex[:8]}"),
        heartbeat_s=1.5,
        deadbands={"vmon": Deadband(absolute=1.0)},
    )

    @svc.command("set", Arg("value", float, minimum=0, maximum=100))
    def set_value(args):
        if args["value"] == 13:
            raise CommandError("13 is refused by the device rules")
        lamp.actions.append(("set", args))
        return {"value": args["value"]}

    @svc.command("crash")
    def crash(args):
        lamp.actions.append(("crash", args))
        raise RuntimeError("handler bug")

    svc.start()
    assert svc.wait_connected(10)
    yield svc
    svc.stop()


def raw_client(broker: LocalBroker, user: str | None) -> mqtt.Client:
    client = build_client(broker.settings(user), f"raw-{uuid.uuid4().hex[:8]}")
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert connected.wait(5)
    return client


def send_raw(operator: DcsClient, topic: str, payload: bytes) -> dict:
    """Publish a raw payload as the operator and return the reply seen on caen/reply."""
    operator.subscribe(["caen/reply"])
    time.sleep(0.2)
    marker = time.time()
    operator.client.publish(topic, payload, qos=1)
    return operator.wait_for(
        "caen/reply", lambda m: m.received >= marker and m.json()["id"] in (5, None), timeout=5
    ).json()


def test_a_valid_command_is_carried_out_and_answered_with_its_id(service, operator, lamp):
    reply = operator.command("caen", "set", {"id": "req-1", "value": 42})
    assert reply["ok"] is True and reply["error"] is None
    assert reply["id"] == "req-1" and reply["command"] == "set" and reply["result"] == {"value": 42.0}
    assert lamp.actions == [("set", {"value": 42.0})]


def test_replies_go_to_the_mqtt5_response_topic_with_the_correlation_data(broker, service):
    client = raw_client(broker, "operator")
    got: list[mqtt.MQTTMessage] = []
    done = threading.Event()

    def on_message(c, u, msg):
        got.append(msg)
        done.set()

    client.on_message = on_message
    client.subscribe("dcs/reply/raw-test", qos=1)
    time.sleep(0.2)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "dcs/reply/raw-test"
    props.CorrelationData = b"\x01\x02corr"
    client.publish("caen/cmd/set", json.dumps({"value": 1}), qos=1, properties=props)
    assert done.wait(5)
    assert got[0].properties.CorrelationData == b"\x01\x02corr"
    assert json.loads(got[0].payload)["ok"] is True
    client.loop_stop()
    client.disconnect()


@pytest.mark.parametrize(
    ("topic", "payload", "error"),
    [
        ("caen/cmd/set", b'{"id": 5, "value": ', "malformed JSON"),
        ("caen/cmd/set", b"[]", "must be a JSON object"),
        ("caen/cmd/explode", b'{"id": 5}', "unknown command 'explode'"),
        ("caen/cmd/set", b'{"id": 5, "value": "high"}', "must be a number"),
        ("caen/cmd/set", b'{"id": 5, "value": 1000}', "above the maximum 100"),
        ("caen/cmd/set", b'{"id": 5, "value": NaN}', "NaN"),
        ("caen/cmd/set", b'{"id": 5}', "missing argument 'value'"),
        ("caen/cmd/set", b'{"id": 5, "value": 1, "force": true}', "unknown argument"),
        ("caen/cmd/set", b'{"id": 5, "value": 13}', "13 is refused"),
        ("caen/cmd/set", b"\xc3\x28", "not UTF-8"),
        ("caen/cmd/set", b'{"value": 1, "pad": "' + b"x" * 70_000 + b'"}', "payload too large"),
    ],
)
def test_bad_input_gets_a_clear_error_reply_and_no_action(service, operator, lamp, topic, payload, error):
    reply = send_raw(operator, topic, payload)
    assert reply["ok"] is False
    assert error in reply["error"]
    assert lamp.actions == []
    # and the service keeps working afterwards
    assert operator.command("caen", "set", value=1)["ok"]


def test_a_crashing_handler_is_reported_and_the_service_keeps_serving(service, operator, lamp):
    reply = operator.command("caen", "crash", check=False)
    assert reply["ok"] is False and "internal error: handler bug" in reply["error"]
    assert operator.command("caen", "set", value=2)["ok"]
    assert service.health.snapshot()["last_error"].startswith("crash")


def test_a_redelivered_command_is_answered_again_but_not_acted_on_twice(service, operator, lamp):
    first = operator.command("caen", "set", {"id": "once", "value": 7})
    again = operator.command("caen", "set", {"id": "once", "value": 7})
    assert first["ok"] and again["ok"] and again.get("duplicate") is True
    assert lamp.actions == [("set", {"value": 7.0})]
    # the same id with a different command is a new command
    operator.command("caen", "set", {"id": "once", "value": 8})
    assert len(lamp.actions) == 2


def test_availability_is_retained_online_while_the_service_runs(service, monitor):
    msg = monitor.wait_for("caen/availability", lambda m: m.payload == b"online", timeout=5)
    assert msg.retain


def test_status_is_retained_deadbanded_and_sent_as_heartbeat(service, monitor):
    seen: list[Message] = []
    monitor.watch("caen/status", seen.append)
    time.sleep(0.3)
    assert service.publish_status({"state": "ON", "vmon": 100.0})
    assert not service.publish_status({"state": "ON", "vmon": 100.5})  # inside the 1 V deadband
    assert service.publish_status({"state": "ON", "vmon": 102.0})
    assert service.publish_status({"state": "TRIPPED", "vmon": 102.0})
    time.sleep(2.5)  # one heartbeat (1.5 s) with the last state
    states = [m.json()["state"] for m in seen if not m.retain]
    assert states[:3] == ["ON", "ON", "TRIPPED"]
    assert states[3:] and set(states[3:]) == {"TRIPPED"}
    assert all("ts" in m.json() for m in seen)


def test_a_late_subscriber_gets_the_current_status_from_the_retained_message(service, broker):
    service.publish_status({"state": "HV_ON", "vmon": 250.0}, "module/M1")
    with DcsClient(broker.settings("monitor")) as late:
        assert late.status("caen", "module/M1")["state"] == "HV_ON"


def test_events_are_published_with_kind_severity_and_time(service, monitor):
    monitor.subscribe(["caen/event"])
    time.sleep(0.2)
    service.event("trip", "channel HV1 tripped", severity="alarm", channel="HV1")
    doc = monitor.wait_for("caen/event", timeout=5).json()
    assert doc["kind"] == "trip" and doc["severity"] == "alarm" and doc["channel"] == "HV1" and doc["ts"] > 0


def test_a_watch_is_in_place_when_it_returns_so_an_event_published_right_after_is_seen(service, broker):
    """A test or script that watches, then acts, must not miss the first reaction: watch() returns once the
    broker has acknowledged the subscription (it did not wait before; an interlock event published within a
    millisecond of the watch was lost on a loaded machine)."""
    for k in range(10):
        with DcsClient(broker.settings("operator")) as client:
            seen: list[Message] = []
            assert client.watch("caen/event", seen.append) is True  # acknowledged by the broker
            service.event("trip", f"trip #{k}", severity="alarm")
            deadline = time.monotonic() + 5
            while not seen and time.monotonic() < deadline:
                time.sleep(0.005)
            assert [m.json()["message"] for m in seen] == [f"trip #{k}"], "an event right after watch() was missed"


def test_health_reports_version_uptime_resources_and_counters(service, monitor):
    service._publish_health()
    doc = monitor.wait_for("caen/health", timeout=5).json()
    for key in ("version", "host", "uptime_s", "cpu_percent", "rss_mb", "mqtt_reconnects", "commands_ok", "last_error"):
        assert key in doc
    assert doc["rss_mb"] > 1


def test_status_dropped_by_a_full_outgoing_queue_is_sent_again_so_retained_state_is_never_stale(broker, monitor):
    svc = Service("caen", broker.settings("caen", client_id=f"q-{uuid.uuid4().hex[:8]}"), max_queued=20)
    svc.start()
    try:
        assert svc.wait_connected(10)
        for i in range(200):  # far faster than 20 in-flight messages can be acknowledged
            svc.publish_status({"state": "ON", "n": i}, f"channel/c{i}")
        assert svc.health.publish_failures > 0  # the queue did overflow
        monitor.subscribe(["caen/status/channel/#"])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            latest = {t: m.json()["n"] for t, m in monitor.latest("caen/status/channel/#").items()}
            if len(latest) == 200 and all(latest[f"caen/status/channel/c{i}"] == i for i in range(200)):
                break
            time.sleep(0.2)
        assert len(latest) == 200
        assert all(latest[f"caen/status/channel/c{i}"] == i for i in range(200))
    finally:
        svc.stop()
