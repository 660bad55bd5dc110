"""No anonymous control: the operator UI's page and its socket.io channel need a login, and a login's role decides
what its widget actions may do. Spoken at the protocol level (Engine.IO polling, raw WebSocket upgrade) to the real
Node-RED with the project's settings.js and flows.json, with a real Mosquitto behind it."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

import pytest
from gateway_nodered import NodeRed, node_red_ready
from gateway_socketio import HttpStatus, PollingSocket, http

from trackerdcs.audit import AuditRecorder
from trackerdcs.client import DcsClient

pytestmark = pytest.mark.skipif(node_red_ready() is not None, reason=str(node_red_ready()))

SOCKET_PATH = "/dashboard/socket.io/?EIO=4&transport=polling"


@pytest.fixture(scope="module")
def node_red(broker, tmp_path_factory):
    nr = NodeRed(broker, tmp_path_factory.mktemp("node-red-login"), client_id="nr-test-login")
    nr.start()
    with DcsClient(broker.settings("monitor", client_id="nr-login-ready")) as probe:
        probe.wait_for("interlock/availability", lambda m: m.payload == b"online", 20)
    yield nr
    nr.stop()


class CommandTap:
    """Every command published on the broker (``+/cmd/#``), as the services would receive it."""

    def __init__(self, broker) -> None:
        self.commands: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        self.client = DcsClient(broker.settings("monitor", client_id=f"tap-{time.monotonic_ns()}"))

    def __enter__(self) -> CommandTap:
        self.client.connect()
        self.client.watch("+/cmd/#", self._on)
        self.client.subscribe(["+/cmd/#"])
        time.sleep(0.3)
        return self

    def _on(self, message) -> None:
        with self.lock:
            self.commands.append((message.topic, json.loads(message.payload or b"{}")))

    def wait(self, topic: str, timeout: float = 5.0) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for seen, payload in self.commands:
                    if seen == topic:
                        return payload
            time.sleep(0.05)
        return None

    def __exit__(self, *exc) -> None:
        self.client.close()


def status_of(url: str, authorization: str | None = None, method: str = "GET", body: str | None = None) -> int:
    try:
        return http(method, url, body=body, authorization=authorization)[0]
    except HttpStatus as exc:
        return exc.status


def raw_upgrade(port: int, path: str, authorization: str | None = None) -> str:
    """Send a WebSocket upgrade request by hand; return the server's status line."""
    key = base64.b64encode(b"0123456789abcdef").decode()
    lines = [
        f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
    ]  # fmt: skip
    if authorization:
        lines.append(f"Authorization: {authorization}")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return conn.recv(4096).decode("latin-1").split("\r\n")[0]


def test_without_a_login_there_is_no_page_no_socket_session_and_no_websocket(node_red):
    for path in ("/dashboard/stand", "/dashboard", "/dashboard/_setup", "/Dashboard/stand", "//dashboard/stand",
                 "/%64ashboard/stand", SOCKET_PATH, "/dcs-auth/whoami"):  # fmt: skip
        assert status_of(node_red.url + path) == 401, path
    with pytest.raises(HttpStatus) as refused:
        PollingSocket(node_red.url).open()
    assert refused.value.status == 401 and "sid" not in refused.value.body  # no anonymous Engine.IO session
    # a made-up session id does not let a message in either
    assert status_of(f"{node_red.url}{SOCKET_PATH}&sid=AAAAAAAAAAAAAAAAAAAA", method="POST", body="40") == 401
    assert " 401 " in raw_upgrade(node_red.port, "/dashboard/socket.io/?EIO=4&transport=websocket")
    wrong = "Basic " + base64.b64encode(b"alice:not-her-password").decode()
    assert status_of(node_red.url + SOCKET_PATH, wrong) == 401
    assert status_of(node_red.url + "/dashboard/stand", node_red.basic_auth("alice")) == 200


def test_the_login_says_who_and_which_role(node_red):
    for name, role in (("alice", "operator"), ("victor", "viewer"), ("erin", "expert")):
        _, body = http("GET", node_red.url + "/dcs-auth/whoami", authorization=node_red.basic_auth(name))
        assert json.loads(body) == {"name": name, "role": role}


def test_an_operator_acts_in_her_own_name_whatever_the_browser_claims(node_red, broker):
    with CommandTap(broker) as tap:
        sock = PollingSocket(node_red.url, node_red.basic_auth("alice"))
        sock.open()
        sock.connect()
        forged = {"user": {"name": "erin", "role": "expert"}}
        sock.emit("widget-send", "ui-w-modules",
                  {"topic": "caen/cmd/hv_off", "payload": {"by": "mallory"}, "_client": forged})  # fmt: skip
        command = tap.wait("caen/cmd/hv_off")
        assert command is not None, f"no command reached the broker:\n{node_red.log()}"
        assert command["by"] == "alice" and command["from"].startswith("ui ") and "127.0.0.1" in command["from"]
        # the operator role may not write limits: the guard refuses, nothing reaches the broker
        sock.emit("widget-send", "ui-w-modules",
                  {"topic": "caen/cmd/set", "payload": {"channel": "M1_hv", "param": "V0Set", "value": 1},
                   "_client": forged})  # fmt: skip
        assert tap.wait("caen/cmd/set", timeout=2.0) is None


def test_an_expert_may_write_settings(node_red, broker):
    with CommandTap(broker) as tap:
        sock = PollingSocket(node_red.url, node_red.basic_auth("erin"))
        sock.open()
        sock.connect()
        sock.emit("widget-send", "ui-w-modules",
                  {"topic": "caen/cmd/set", "payload": {"channel": "M1_hv", "param": "V0Set", "value": 1}})  # fmt: skip
        command = tap.wait("caen/cmd/set")
        assert command is not None and command["by"] == "erin"


def test_a_viewer_sees_but_no_action_of_hers_reaches_a_service(node_red, broker):
    with CommandTap(broker) as tap:
        sock = PollingSocket(node_red.url, node_red.basic_auth("victor"))
        sock.open()
        sock.connect()  # a viewer has a session: she sees the live values
        for event in ("widget-action", "widget-send"):
            sock.emit(event, "ui-w-modules", {"topic": "caen/cmd/hv_off", "payload": {}})
        sock.emit("widget-action", "ui-w-interlock", {"topic": "interlock/cmd/acknowledge", "payload": {}})
        assert tap.wait("caen/cmd/hv_off", timeout=2.0) is None
        assert tap.wait("interlock/cmd/acknowledge", timeout=0.5) is None
    assert "from viewer victor dropped" in node_red.log()


def test_an_interlock_acknowledgement_from_the_ui_is_in_the_audit_trail_with_the_person(node_red, broker, tmp_path):
    recorder = AuditRecorder(broker.settings("audit", client_id="audit-ui-test"), tmp_path / "audit")
    recorder.start()
    try:
        assert recorder.svc.wait_connected(10)
        time.sleep(0.3)
        sock = PollingSocket(node_red.url, node_red.basic_auth("alice"))
        sock.open()
        sock.connect()
        sock.emit("widget-send", "ui-w-interlock",
                  {"topic": "interlock/cmd/acknowledge", "payload": {"operator": "not-alice"}})  # fmt: skip
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not recorder.store.query(0):
            time.sleep(0.05)
    finally:
        recorder.stop()
    [ack] = recorder.store.query(0)
    assert (ack["service"], ack["command"], ack["by"], ack["args"]) == ("interlock", "acknowledge", "alice",
                                                                        {"operator": "alice"})  # fmt: skip
    assert ack["from"] == "ui 127.0.0.1" or ack["from"].endswith("127.0.0.1")
    assert ack["reply"] is not None and isinstance(ack["reply"]["ok"], bool)  # the interlock's own answer
