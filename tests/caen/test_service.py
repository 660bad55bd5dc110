"""caen-fsm end to end: a real caen-fsm process, a real simulated crate IOC (Channel Access) and a real
Mosquitto. What the operator sends over MQTT and what the crate's PVs then read."""

from __future__ import annotations

import json
import time

import pytest

from trackerdcs.client import CommandFailed

pytestmark = pytest.mark.timeout(60)

MODULE_FIELDS = {
    "module", "state", "lv_channel", "hv_channel", "lv_vmon", "lv_imon", "hv_vmon", "hv_imon", "hv_v0set", "ts",
}  # fmt: skip
CHANNEL_FIELDS = {
    "channel",
    "module",
    "kind",
    "slot",
    "ch",
    "state",
    "on",
    "vmon",
    "imon",
    "v0set",
    "i0set",
    "status",
    "flags",
    "pdwn",
    "imrange",
    "ts",
}


def module_state(operator, module, state, timeout=10.0):
    return operator.wait_for(f"caen/status/module/{module}", lambda m: m.json()["state"] == state, timeout).json()


def system_state(operator, state, timeout=10.0):
    return operator.wait_for("caen/status", lambda m: m.json()["state"] == state, timeout).json()


@pytest.fixture
def events(operator):
    """Every caen/event seen from the start of the test (events are not retained)."""
    seen: list[dict] = []
    operator.watch("caen/event", lambda m: seen.append(m.json()))
    return seen


def wait_event(events, kind, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in events if e["kind"] == kind]
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"no {kind!r} event within {timeout} s; saw {[e['kind'] for e in events]}")


def wait_pv(crate, name, predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = crate.get(name)
        if value is not None and predicate(value):
            return value
        time.sleep(0.02)
    raise AssertionError(f"{name} = {value!r} never satisfied the condition")


def wait_label(crate, name, label, timeout=5.0):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = crate.label(name)
        if value is not None and value.lower() == label.lower():
            return value
        time.sleep(0.02)
    raise AssertionError(f"{name} reads {value!r}, never {label!r}")


def test_full_power_cycle_of_all_modules_with_contract_payloads(caen, operator, crate):
    reply = operator.command("caen", "lv_on")
    assert reply["result"]["modules"] == ["M0", "M1", "M2"]
    system_state(operator, "LV_ON")
    operator.command("caen", "hv_on", {})
    status = system_state(operator, "HV_ON")
    assert status["modules_hv_on"] == 3 and status["connected"] is True and status["modules_total"] == 3
    assert crate.get("12:002:VMon") == pytest.approx(150.0, abs=0.01)  # per-channel setV from the config
    module = operator.status("caen", "module/M1")  # as the IOC reads it: negative on a negative board
    assert set(module) == MODULE_FIELDS and abs(module["hv_vmon"]) == pytest.approx(100.0, abs=0.5)
    channel = operator.status("caen", "channel/M1_hv")
    assert set(channel) == CHANNEL_FIELDS
    assert channel["kind"] == "hv" and channel["slot"] == 12 and channel["ch"] == 1 and channel["on"] is True
    assert channel["state"] == "ON" and channel["flags"] == ["ON"] and channel["status"] == 1
    operator.command("caen", "hv_off")
    system_state(operator, "LV_ON")
    operator.command("caen", "lv_off")
    system_state(operator, "OFF")
    assert not crate.is_on("00:000") and not crate.is_on("12:000")


@pytest.mark.flavours("trackerdcs")  # flavour-independent logic: the default layout is enough
def test_hv_on_without_lv_is_refused_naming_the_module_and_nothing_is_switched(caen, operator, crate):
    operator.command("caen", "lv_on", modules=["M0"])
    module_state(operator, "M0", "LV_ON")
    reply = operator.command("caen", "hv_on", modules=["M0", "M1"], check=False)
    assert reply["ok"] is False
    assert "M1 (LV is OFF" in reply["error"] and "M0 (" not in reply["error"]
    time.sleep(0.3)
    assert not crate.is_on("12:000") and not crate.is_on("12:001")


def test_lv_off_ramps_hv_down_first_then_switches_lv_off(caen, operator, crate, events):
    operator.command("caen", "lv_on", modules=["M0"])
    module_state(operator, "M0", "LV_ON")
    operator.command("caen", "set", module="M0", kind="hv", param="RDWn", value=100.0)
    operator.command("caen", "hv_on", modules=["M0"])
    module_state(operator, "M0", "HV_ON")
    reply = operator.command("caen", "lv_off", modules=["M0"])
    assert reply["result"]["waiting_for_hv_off"] == ["M0"]
    # HV is coming down at RDWn while LV stays on
    module_state(operator, "M0", "HV_RAMP_DOWN", timeout=3)
    assert crate.is_on("00:000")
    module_state(operator, "M0", "OFF", timeout=5)
    done = [e for e in events if e["kind"] == "lv_off_done"]
    assert done and done[0]["module"] == "M0"
    assert crate.get("12:000:VMon") <= 5.0
    kinds = [e["kind"] for e in events]
    assert kinds.index("lv_off_sequence") < kinds.index("lv_off_done")


def test_set_writes_within_limits_and_refuses_outside_with_a_clear_error(caen, operator, crate):
    reply = operator.command("caen", "set", channel="M1_hv", param="V0Set", value=250)
    pv = crate.pv("12:001:V0Set", write=True)
    assert reply["result"] == {"channel": "M1_hv", "param": "V0Set", "value": 250.0, "pv": pv}
    wait_pv(crate, "12:001:V0Set", lambda v: v == 250.0)
    operator.command("caen", "set", module="M1", kind="hv", param="tripMode", value="Ramp")  # prototype alias
    wait_label(crate, "12:001:PDwn", "Ramp")
    bad = operator.command("caen", "set", channel="M0_hv", param="V0Set", value=400, check=False)
    assert bad["ok"] is False and "M0_hv: V0Set=400.0 is above the configured limit 350" in bad["error"]
    bad = operator.command("caen", "set", channel="M0_lv", param="V0Set", value=20, check=False)
    assert "above the configured limit 14" in bad["error"]
    for args, fragment in [
        ({"channel": "M0_hv", "param": "Pw", "value": 1}, "use lv_on"),
        ({"channel": "M0_hv", "param": "VMon", "value": 1}, "not a settable hv parameter"),
        ({"channel": "nope", "param": "V0Set", "value": 1}, "unknown channel 'nope'"),
        ({"module": "M0", "param": "V0Set", "value": 1}, "needs 'channel', or 'module' and 'kind'"),
        ({"channel": "M0_hv", "param": "V0Set", "value": "lots"}, "argument 'value' must be a number, got string"),
        ({"channel": "M0_hv", "param": "PDwn", "value": "Explode"}, "'Explode' is not one of them"),
    ]:
        reply = operator.command("caen", "set", args, check=False)
        assert reply["ok"] is False and fragment in reply["error"], (args, reply)
    assert crate.get("12:000:V0Set") != 400.0 and not crate.is_on("12:000")


def test_over_current_trip_is_an_alarm_latched_until_clear_alarms(caen, operator, crate, events):
    operator.command("caen", "lv_on", modules=["M2"])
    module_state(operator, "M2", "LV_ON")
    operator.command("caen", "hv_on", modules=["M2"])
    module_state(operator, "M2", "HV_ON")
    crate.put("SIM:12:002:Load", 1.0)  # 150 V on 1 MOhm = 150 uA > I0Set 10 uA; trips after Trip=0.3 s
    trip = wait_event(events, "trip", timeout=5)
    assert trip["severity"] == "alarm" and trip["channel"] == "M2_hv" and trip["module"] == "M2"
    assert "INTTRIP" in trip["flags"]
    assert system_state(operator, "TRIPPED")["modules_tripped"] == 1
    channel = operator.status("caen", "channel/M2_hv")
    assert channel["state"] == "TRIPPED" and channel["on"] is False
    crate.put("SIM:12:002:Load", 1000.0)
    refused = operator.command("caen", "hv_on", modules=["M2"], check=False)
    assert "TRIPPED: clear_alarms first" in refused["error"]
    if not crate.has_clear:  # this IOC has no crate-level clear: the service says so and writes nothing
        refused = operator.command("caen", "clear_alarms", check=False)
        assert refused["ok"] is False and "has no crate-level clear" in refused["error"]
        return
    reply = operator.command("caen", "clear_alarms")
    assert reply["result"]["tripped_channels"] == ["M2_hv"]
    module_state(operator, "M2", "LV_ON")  # trip cleared, HV stays off: nothing switches on by itself
    operator.command("caen", "hv_on", modules=["M2"])
    module_state(operator, "M2", "HV_ON")


def test_lv_trip_with_hv_on_switches_hv_off_by_interlock(caen, operator, crate, events):
    operator.command("caen", "lv_on", modules=["M1"])
    module_state(operator, "M1", "LV_ON")
    operator.command("caen", "hv_on", modules=["M1"])
    module_state(operator, "M1", "HV_ON")
    crate.put("SIM:00:001:ForceTrip", 1)
    event = wait_event(events, "interlock", timeout=5)
    assert event["module"] == "M1" and event["severity"] == "alarm"
    wait_label(crate, "12:001:Pw", "Off")


@pytest.mark.serial  # times the path to the crate in milliseconds
@pytest.mark.flavours("trackerdcs", "slac-caenhvasyn")  # the default and the most PVs (one per Status bit)
def test_interlock_hv_off_for_all_reaches_the_crate_fast(caen, operator, crate):
    operator.command("caen", "lv_on")
    system_state(operator, "LV_ON")
    operator.command("caen", "hv_on")
    system_state(operator, "HV_ON")
    t0 = time.monotonic()
    operator.command("caen", "hv_off", {})
    reply_s = time.monotonic() - t0
    for ch in range(3):
        wait_label(crate, f"12:{ch:03d}:Pw", "Off", timeout=0.5)
    elapsed = time.monotonic() - t0
    assert reply_s < 0.5 and elapsed < 0.5, (reply_s, elapsed)


def test_ioc_restart_shows_disconnected_then_recovers_without_switching_anything_on(caen, operator, crate, events):
    operator.command("caen", "lv_on", modules=["M0"])
    module_state(operator, "M0", "LV_ON")
    crate.kill()
    status = system_state(operator, "DISCONNECTED", timeout=15)
    assert status["connected"] is False
    wait_event(events, "disconnected", timeout=5)
    assert module_state(operator, "M0", "DISCONNECTED")["module"] == "M0"
    assert operator.command("caen", "hv_on", modules=["M0"], check=False)["ok"] is False
    crate.start()  # a fresh IOC: everything off
    status = system_state(operator, "OFF", timeout=30)
    assert status["connected"] is True
    wait_event(events, "reconnected", timeout=5)
    time.sleep(1.0)
    assert crate.get("SIM:PwOnPuts") == 0, "the service switched something on after the IOC came back"
    assert operator.status("caen")["state"] == "OFF"


def test_service_restart_reads_the_crate_and_switches_nothing(caen, operator, crate):
    operator.command("caen", "lv_on", modules=["M0", "M1"])
    module_state(operator, "M1", "LV_ON")
    puts_before = crate.get("SIM:PwOnPuts")
    caen.stop()
    operator.wait_for("caen/availability", lambda m: m.payload == b"offline", timeout=10)
    started = time.time()
    caen.start()
    caen.wait_ready(operator, started, state="MIXED")
    status = operator.status("caen")
    assert status["modules_total"] == 3
    for module, state in (("M0", "LV_ON"), ("M1", "LV_ON"), ("M2", "OFF")):  # read back by the new process:
        operator.wait_for(  # a retained status of the old one (ts before the restart) does not count
            f"caen/status/module/{module}",
            lambda m, state=state: m.json()["state"] == state and m.json()["ts"] >= started,
            timeout=10,
        )
    time.sleep(0.5)
    assert crate.get("SIM:PwOnPuts") == puts_before


@pytest.mark.flavours("trackerdcs")  # flavour-independent logic: the default layout is enough
def test_bad_input_gets_clear_error_replies_and_the_service_keeps_working(caen, operator, crate):
    replies = []
    operator.watch("caen/reply", lambda m: replies.append(m.json()))
    operator.client.publish("caen/cmd/hv_on", b"{not json", qos=1)
    operator.client.publish("caen/cmd/launch", b"{}", qos=1)
    operator.wait_for("caen/reply", lambda m: m.json()["command"] == "launch", timeout=5)
    assert any("malformed JSON" in (r["error"] or "") for r in replies)
    assert any("unknown command 'launch'" in (r["error"] or "") for r in replies)
    for cmd, args, fragment in [
        ("hv_on", {"modules": "M0"}, "must be a list"),
        ("hv_on", {"modules": [1]}, "must be a string"),
        ("lv_on", {"modules": ["M9"]}, "unknown module(s): M9"),
        ("lv_on", {"modules": []}, "empty module list"),
        ("lv_on", {"module": ["M0"]}, "unknown argument(s)"),
        ("set", {"channel": "M0_hv", "param": "V0Set"}, "missing argument 'value'"),
    ]:
        reply = operator.command("caen", cmd, args, check=False)
        assert reply["ok"] is False and fragment in reply["error"], (cmd, args, reply)
    with pytest.raises(CommandFailed):
        operator.command("caen", "set", channel="M0_hv", param="V0Set", value=1e9)
    assert crate.get("SIM:PwOnPuts") == 0
    operator.command("caen", "lv_on", modules=["M0"])  # still alive and obeying
    module_state(operator, "M0", "LV_ON")
    assert "Traceback" not in caen.log()


def test_refresh_republishes_everything_and_reconnect_reports(caen, operator, crate):
    seen = set()
    operator.watch("caen/status/#", lambda m: seen.add(m.topic) if not m.retain else None)
    reply = operator.command("caen", "refresh")
    assert reply["result"]["published"] == 1 + 3 + 6
    deadline = time.monotonic() + 3
    while len(seen) < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "caen/status" in seen and "caen/status/channel/M2_lv" in seen and "caen/status/module/M0" in seen
    reply = operator.command("caen", "reconnect")
    assert reply["result"]["recreated_channels"] == 0
    if crate.flavour == "trackerdcs":  # 13 PVs per channel, ClearAlarm, PDwn/ImRange on the 3 HV channels
        assert reply["result"]["connected"] == 6 * 13 + 1 + 3
    health = json.loads(operator.wait_for("caen/health", lambda m: "pvs_total" in m.json(), timeout=15).payload)
    assert health["pvs_total"] == reply["result"]["connected"]
