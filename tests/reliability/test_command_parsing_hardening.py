"""A command that reaches a service after the deadline its sender set is refused, never carried out.

(Found by the broker-kill test: a command held back in the sender's MQTT client during a broker outage was
delivered after the sender had reported it failed, and carried out.)"""

from __future__ import annotations

import json
import time

from trackerdcs.config import MqttSettings
from trackerdcs.service import Service


def make_service() -> tuple[Service, list[dict]]:
    svc = Service("caen", MqttSettings(host="127.0.0.1", port=1, client_id="deadline-test"))
    calls: list[dict] = []
    svc.add_command("hv_on", lambda args: calls.append(args) or {"switched": True})
    return svc, calls


def test_a_command_past_its_deadline_is_refused_with_a_clear_reason_and_not_acted_on():
    svc, calls = make_service()
    reply = svc.execute("hv_on", json.dumps({"id": "a1", "deadline": time.time() - 2.5}).encode())
    assert reply["ok"] is False and "expired" in reply["error"] and "2.5 s" in reply["error"]
    assert reply["id"] == "a1" and calls == []


def test_a_command_within_its_deadline_is_carried_out_and_the_deadline_is_not_an_argument():
    svc, calls = make_service()
    reply = svc.execute("hv_on", json.dumps({"id": "a2", "deadline": time.time() + 5}).encode())
    assert reply["ok"] is True and calls == [{}]


def test_a_malformed_deadline_is_refused():
    svc, calls = make_service()
    for bad in ("soon", True, [1], {"t": 1}):
        reply = svc.execute("hv_on", json.dumps({"deadline": bad}).encode())
        assert reply["ok"] is False and "'deadline' must be" in reply["error"], bad
    reply = svc.execute("hv_on", b'{"deadline": 1e999}')  # JSON overflow decodes as infinity
    assert reply["ok"] is False and "'deadline' must be" in reply["error"]
    assert calls == []


def test_a_payload_of_control_characters_is_malformed_not_an_empty_argument_list():
    """Found by the fuzz campaign: b"\\x0c" (form feed) was taken as "no arguments", so lv_off acted on every
    module. Only an empty payload or JSON whitespace means "no arguments"."""
    svc, calls = make_service()
    for junk in (b"\x0c", b"\x0b", b" \x0c\n", b"\x1c\x1d\x1e\x1f"):
        reply = svc.execute("hv_on", junk)
        assert reply["ok"] is False and "malformed JSON" in reply["error"], junk
    assert calls == []
    assert svc.execute("hv_on", b" \r\n\t")["ok"] is True and calls == [{}]
