"""Issue 18 (findings from independent devices), CAEN part: what an operator, a script or the crate does,
and what caen-fsm then does on the crate. A real caen-fsm, a real simulated crate IOC, a real Mosquitto; the
interlock's published state comes from ``InterlockStandIn`` (what Node-RED publishes)."""

from __future__ import annotations

import json
import time

import pytest

#: the interlock permit's logic does not depend on the IOC: the default layout, unless a test says otherwise
pytestmark = [pytest.mark.timeout(90), pytest.mark.flavours("trackerdcs")]
ALL = ("trackerdcs", "halla", "cls-hvcaenx527", "slac-caenhvasyn", "jlab-clas12")

CHILLER = {"chiller_not_running": "hv_off+lv_off"}
DEW_POINT = {"dewpoint:box": "hv_off"}


def wait_module(operator, module, state, timeout=10.0):
    return operator.wait_for(f"caen/status/module/{module}", lambda m: m.json()["state"] == state, timeout).json()


def wait_interlock(operator, state, timeout=5.0):
    return operator.wait_for("caen/status", lambda m: m.json().get("interlock") == state, timeout).json()


def watch(operator, pattern):
    seen: list = []
    operator.watch(pattern, lambda m: seen.append(m) if not m.retain else None)
    return seen


def wait_event(events, kind, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e.json() for e in events if e.json()["kind"] == kind]
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"no {kind!r} event within {timeout} s; saw {[e.json()['kind'] for e in events]}")


def power_up(operator, modules=("M0",)):
    operator.command("caen", "lv_on", modules=list(modules))
    for m in modules:
        wait_module(operator, m, "LV_ON")
    operator.command("caen", "hv_on", modules=list(modules))
    for m in modules:
        wait_module(operator, m, "HV_ON")


# ---------------------------------------------------------------------------------------------- 1. permit
def test_power_on_is_refused_while_the_interlock_is_tripped_naming_the_latched_reasons(
    caen, operator, crate, interlock
):
    interlock.trip(**CHILLER, **DEW_POINT)
    wait_interlock(operator, "TRIPPED")
    for cmd in ("lv_on", "hv_on"):
        reply = operator.command("caen", cmd, modules=["M0"], check=False)
        assert reply["ok"] is False
        assert f"{cmd} refused: interlock TRIPPED (latched: chiller_not_running, dewpoint:box)" in reply["error"]
    raised = operator.command("caen", "set", channel="M0_hv", param="V0Set", value=300.0, check=False)
    assert raised["ok"] is False and "raising M0_hv V0Set to 300 refused: interlock TRIPPED" in raised["error"]
    lowered = operator.command("caen", "set", channel="M0_hv", param="V0Set", value=50.0, check=False)
    assert lowered["ok"] is True  # lowering a voltage is always allowed
    time.sleep(0.3)
    assert crate.get("SIM:PwOnPuts") == 0 and not crate.is_on("00:000")
    interlock.ok()
    wait_interlock(operator, "OK")
    assert operator.command("caen", "lv_on", modules=["M0"])["ok"] is True


def test_power_on_is_refused_while_the_interlock_is_missing_or_offline(caen, operator, crate, interlock):
    interlock.clear()  # the retained status deleted: as on a stand where Node-RED never ran
    wait_interlock(operator, "MISSING")
    reply = operator.command("caen", "lv_on", check=False)
    assert reply["ok"] is False and "lv_on refused: interlock MISSING; no message on interlock/status" in reply["error"]
    interlock.ok()
    interlock.availability("offline")  # Node-RED's last will
    wait_interlock(operator, "OFFLINE")
    reply = operator.command("caen", "lv_on", check=False)
    assert reply["ok"] is False and "interlock OFFLINE; interlock/availability is offline" in reply["error"]
    assert crate.get("SIM:PwOnPuts") == 0


@pytest.mark.parametrize("config_overrides", [{"interlock": {"stale_s": 2}}])
def test_power_on_is_refused_once_the_interlock_status_is_stale(caen, operator, crate, interlock):
    interlock.ok()
    wait_interlock(operator, "OK")
    status = wait_interlock(operator, "STALE", timeout=6)  # nothing published for 2 s
    assert status["interlock"] == "STALE"
    reply = operator.command("caen", "lv_on", check=False)
    assert reply["ok"] is False and "lv_on refused: interlock STALE; last status" in reply["error"]
    assert crate.get("SIM:PwOnPuts") == 0


@pytest.mark.flavours(*ALL)
def test_a_chiller_trip_brings_hv_down_then_lv(caen, operator, crate, interlock):
    """Issue 18.1: with the chiller STOPPED, LV stayed ON indefinitely (only hv_off was ever re-sent)."""
    power_up(operator, ["M0", "M1"])
    events = watch(operator, "caen/event")
    channels = watch(operator, "caen/status/channel/+")
    interlock.trip(**CHILLER)  # nobody sends hv_off or lv_off: caen-fsm acts on the permit itself
    for m in ("M0", "M1"):
        wait_module(operator, m, "OFF", timeout=10)
    enforce = wait_event(events, "interlock_enforce")
    assert enforce["severity"] == "alarm" and enforce["lv"] is True and "chiller_not_running" in enforce["message"]
    assert not crate.is_on("00:000") and not crate.is_on("00:001")
    # HV first: when LV read off, HV already read off and below hv_safe_voltage (5 V)
    for lv, hv in (("M0_lv", "M0_hv"), ("M1_lv", "M1_hv")):
        lv_off_at = min(m.received for m in channels if m.topic.endswith(lv) and m.json()["on"] is False)
        hv_before = [m.json() for m in channels if m.topic.endswith(hv) and m.received <= lv_off_at]
        assert hv_before and hv_before[-1]["on"] is False and hv_before[-1]["vmon"] <= 5.0, hv_before[-1:]


@pytest.fixture
def chiller(broker):
    """Publishes the chiller's retained status as julabo-fsm does (account ``julabo``); deleted after."""
    from trackerdcs.client import DcsClient

    with DcsClient(broker.settings("julabo", client_id="test-chiller")) as client:

        def publish(state: str) -> None:
            doc = {"state": state, "connected": True, "bath_temp": -20.0, "ts": time.time()}
            client.client.publish("julabo/status", json.dumps(doc), qos=1, retain=True).wait_for_publish(5)

        yield publish
        client.client.publish("julabo/status", b"", qos=1, retain=True).wait_for_publish(5)


def test_a_chiller_that_stops_is_acted_on_by_caen_fsm_itself_without_waiting_for_the_interlock(
    caen, operator, crate, interlock, chiller
):
    """Issue 18.7: the interlock's relay (Node-RED) took most of the reaction time; the chiller's own status is
    enough for caen-fsm to switch off, and it still works when the interlock is slow or down."""
    chiller("RUNNING")
    power_up(operator, ["M0", "M1"])
    events = watch(operator, "caen/event")
    chiller("STOPPED")  # the interlock stand-in keeps saying OK: nobody relays this
    for m in ("M0", "M1"):
        wait_module(operator, m, "OFF", timeout=10)
    enforce = wait_event(events, "interlock_enforce")
    assert enforce["lv"] is True and "chiller not running (julabo/status: state STOPPED" in enforce["message"]
    assert not crate.is_on("00:000") and not crate.is_on("12:000")
    reply = operator.command("caen", "lv_on", modules=["M0"], check=False)
    assert reply["ok"] is False and "chiller not running (julabo/status: state STOPPED" in reply["error"]
    chiller("RUNNING")  # running again, and the interlock (stand-in) says OK: power-on permitted again
    deadline = time.monotonic() + 5
    while not (reply := operator.command("caen", "lv_on", modules=["M0"], check=False))["ok"]:
        assert time.monotonic() < deadline, reply
        time.sleep(0.1)


def test_a_dew_point_reason_switches_hv_off_and_leaves_lv_on(caen, operator, crate, interlock):
    power_up(operator)
    interlock.trip(**DEW_POINT)
    wait_module(operator, "M0", "LV_ON", timeout=5)
    time.sleep(1.0)
    assert crate.is_on("00:000") and not crate.is_on("12:000")


def test_when_the_interlock_goes_silent_hv_goes_off_with_an_alarm_and_lv_stays(caen, operator, crate, interlock):
    power_up(operator)
    events = watch(operator, "caen/event")
    interlock.availability("offline")  # Node-RED stopped or lost the broker
    lost = wait_event(events, "interlock_lost")
    assert lost["severity"] == "alarm" and "HV switched off" in lost["message"]
    wait_module(operator, "M0", "LV_ON", timeout=5)
    assert crate.is_on("00:000") and not crate.is_on("12:000")
    assert "interlock OFFLINE" in operator.command("caen", "hv_on", check=False)["error"]
    interlock.availability("online")
    wait_interlock(operator, "OK")
    assert len([e for e in events if e.json()["kind"] == "interlock_lost"]) == 1  # one outage, one alarm


@pytest.mark.parametrize("config_overrides", [{"interlock": {"required": False}}])
def test_a_bench_without_interlock_is_an_explicit_switch_warned_at_every_start(caen, operator, crate, interlock):
    interlock.clear()
    assert wait_interlock(operator, "NOT_REQUIRED")["interlock"] == "NOT_REQUIRED"
    operator.command("caen", "lv_on", modules=["M0"])
    wait_module(operator, "M0", "LV_ON")
    assert "WARNING" in caen.log() and "interlock permit NOT enforced (interlock.required: false)" in caen.log()


# ---------------------------------------------------------------------------------------------- 2. enum labels
@pytest.mark.flavours("trackerdcs", "slac-caenhvasyn")  # the crate's own label strings (Enabled/Disabled)
@pytest.mark.parametrize("enum_labels", ["default", "reversed", "upper"])
def test_enum_settings_land_by_label_whatever_the_iocs_order_or_case(caen, operator, crate, interlock):
    """Issue 18.2: against (Ramp, Kill) / (Low, High) the config's tripMode Kill wrote Ramp."""
    power_up(operator)  # writes the configured tripMode Kill and imRange High before switching on
    assert crate.label("12:000:PDwn").lower() == "kill" and crate.label("12:000:ImRange").lower() == "high"
    assert crate.is_on("12:000") and crate.is_on("00:000")
    reply = operator.command("caen", "set", channel="M1_hv", param="PDwn", value="Ramp")
    assert reply["result"]["value"].lower() == "ramp"
    operator.command("caen", "set", channel="M1_hv", param="ImRange", value="low")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and crate.label("12:001:ImRange").lower() != "low":
        time.sleep(0.05)
    assert crate.label("12:001:PDwn").lower() == "ramp" and crate.label("12:001:ImRange").lower() == "low"
    status = operator.wait_for(
        "caen/status/channel/M1_hv", lambda m: (m.json()["pdwn"] or "").lower() == "ramp", timeout=5
    ).json()
    # published as the crate reads it, in the crate's own spelling
    assert status["pdwn"] == crate.raw_label("12:001:PDwn") and status["imrange"] == crate.raw_label("12:001:ImRange")
    refused = operator.command("caen", "set", channel="M1_hv", param="PDwn", value="Explode", check=False)
    assert refused["ok"] is False and "'Explode' is not one of them" in refused["error"]


@pytest.mark.parametrize("enum_labels", ["reversed"])
@pytest.mark.flavours("trackerdcs", "cls-hvcaenx527")  # CLS spells Kill "KILL"
def test_a_tripped_channel_with_trip_mode_kill_is_killed_not_ramped(caen, operator, crate, interlock):
    power_up(operator, ["M2"])  # 150 V, tripMode Kill from the config; RDWn 200 V/s would take 0.75 s
    crate.put("SIM:12:002:Load", 1.0)  # over-current: trips after Trip = 0.3 s
    wait_module(operator, "M2", "TRIPPED", timeout=5)
    assert crate.get("12:002:VMon") < 1.0  # killed at once, not ramping down from 150 V


# ---------------------------------------------------------------------------------------------- 3. stale values
@pytest.mark.flavours(*ALL)
def test_after_an_ioc_restart_nothing_from_before_the_restart_is_published(caen, operator, crate, interlock):
    """Issue 18.3: 'module_0: DISCONNECTED -> HV_ON' was published 46 ms before the true OFF arrived."""
    power_up(operator, ["M0", "M1"])
    crate.kill()
    wait_module(operator, "M0", "DISCONNECTED", timeout=15)
    modules = watch(operator, "caen/status/module/+")
    system = watch(operator, "caen/status")
    channels = watch(operator, "caen/status/channel/+")
    crate.start()  # a fresh IOC: everything off
    operator.wait_for("caen/status", lambda m: m.json()["state"] == "OFF" and m.json()["connected"], timeout=30)
    time.sleep(0.5)
    assert {m.json()["state"] for m in modules} <= {"DISCONNECTED", "OFF"}, [m.json()["state"] for m in modules]
    assert {m.json()["state"] for m in system} <= {"DISCONNECTED", "OFF"}
    assert channels, "no channel status published after the restart"
    for m in channels:  # before the restart M0/M1 read on at 12 V / 100 V; the new IOC reads off at 0 V
        snap = m.json()
        assert snap["on"] is False and (snap["vmon"] is None or snap["vmon"] < 1.0), snap


# ---------------------------------------------------------------------------------------------- 5. types
def test_a_string_is_not_a_number_and_a_number_is_not_a_label(caen, operator, crate, interlock):
    """Issue 18.5: set V0Set "12" was carried out (the string converted)."""
    before = crate.get("00:001:V0Set")
    reply = operator.command("caen", "set", channel="M1_lv", param="V0Set", value="12", check=False)
    assert reply["ok"] is False and reply["error"] == "argument 'value' must be a number, got string"
    reply = operator.command("caen", "set", channel="M1_hv", param="PDwn", value=1, check=False)
    assert reply["ok"] is False and reply["error"] == "argument 'value' must be a string, got integer"
    reply = operator.command("caen", "set", channel="M1_hv", param="TripInt", value="0b11", check=False)
    assert reply["ok"] is False and "must be an integer, got string" in reply["error"]
    time.sleep(0.3)
    assert crate.get("00:001:V0Set") == before
    assert operator.command("caen", "set", channel="M1_lv", param="V0Set", value=12)["ok"] is True
