"""The burn-in sequencer on the whole simulation stack when things go wrong: an interlock trip mid-sequence, one
module breaking down in a parallel IV scan, humid air holding a cold step."""

from __future__ import annotations

import json
import time
from pathlib import Path

from julabo_sim import control_client

from .png_reader import decode_png
from .stack_harness import STACK_MARKS, _json, commands_from_burnin, put_pv_when, started_at

pytestmark = STACK_MARKS


def test_interlock_trip_mid_sequence_aborts_to_the_safe_state_and_never_resumes(stack):
    stack.ready()
    stack.start_short_recipe_until("hold warm")
    assert stack.dcs.status("caen")["state"] == "HV_ON"
    assert control_client.send(stack.ports["julabo_control"], "bath 30").startswith("OK")  # too warm: trip
    st = stack.wait_state("ABORTED", "FAILED", timeout=120)
    assert st["state"] == "ABORTED" and "interlock" in st["abort_reason"], st
    assert stack.dcs.status("caen")["state"] == "OFF"
    setpoints = [
        _json(m).get("value")
        for m in stack.messages
        if m.topic == "julabo/cmd/set_setpoint" and str(_json(m).get("id", "")).startswith("burnin-")
    ]
    assert setpoints[-1] == 20.0  # the configured safe temperature
    # conditions clear and the interlock is acknowledged: the burn-in stays aborted, nothing is commanded
    assert control_client.send(stack.ports["julabo_control"], "bath 21").startswith("OK")
    stack.ready()
    calm = time.time()
    time.sleep(3.0)
    assert stack.status()["state"] == "ABORTED"
    assert commands_from_burnin(stack, calm) == []


def test_one_module_breaking_down_in_a_parallel_iv_scan_stops_only_that_module(stack):
    stack.ready()
    leak = "cleanroom:SIM:12:002:Leakage"  # module_2's HV channel: a steep current rise past 110 V
    injector = put_pv_when(stack, "cleanroom:12:002:VMon", 110.0, leak, 3.0)
    try:
        started = stack.dcs.command("burnin", "start", recipe="sim-short", operator="pytest")["result"]
        deadline = time.time() + 600
        scans: list[Path] = []
        while not scans:
            assert time.time() < deadline, stack.status()
            scans = list((stack.var / "burnin" / "archive" / started["uid"] / "iv").glob("*.json"))
            time.sleep(0.5)
        assert "injected" in injector.communicate(timeout=30)[0]
    finally:
        if injector.poll() is None:
            injector.kill()
        put_pv_when(stack, "cleanroom:12:002:VMon", -1.0, leak, 0.0).wait(30)
    iv = json.loads(scans[0].read_text())["modules"]
    assert iv["module_2"]["outcome"] == "breakdown", iv["module_2"]["reason"]
    assert len(iv["module_2"]["points"]) < 8
    for module in ("module_0", "module_1"):
        assert iv[module]["outcome"] == "done" and len(iv[module]["points"]) == 8
    # the burn-in page's curve (retained burnin/status/iv/<module>) holds the archived points
    curve = stack.dcs.wait_for(
        "burnin/status/iv/module_2", lambda m: m.json().get("burnin") == started["uid"], timeout=10
    ).json()
    assert curve["outcome"] == "breakdown" and curve["step"] == 4
    assert [(p["vmon"], p["imon"]) for p in curve["points"]] == [
        (p["vmon"], p["imon"]) for p in iv["module_2"]["points"]
    ]
    # module_2 was ramped down (V0Set 0) while the others went on to their last point and only then ramped down
    since = started_at(stack, started["uid"])
    ramp_downs = [
        _json(m).get("module")
        for m in list(stack.messages)
        if m.received >= since
        and m.topic == "caen/cmd/set"
        and _json(m).get("param") == "V0Set"
        and _json(m).get("value") == 0.0
        and str(_json(m).get("id", "")).startswith("burnin-")
    ]
    assert ramp_downs[:3] == ["module_0", "module_1", "module_2"], ramp_downs  # the scan's first point, 0 V
    assert ramp_downs[3] == "module_2" and set(ramp_downs[4:6]) == {"module_0", "module_1"}, ramp_downs
    st = stack.wait_state("DONE", "ABORTED", "FAILED", "HOLDING", timeout=600)
    assert st["state"] == "DONE", st
    # the scan's picture sits next to its JSON (docs/images/burnin-iv-scan.png is a copy of one)
    assert decode_png(scans[0].with_suffix(".png").read_bytes())[:2] == (1000, 640)


def test_dew_point_holds_a_cold_step_until_the_air_is_dry(stack):
    stack.ready()
    # dew point ~14.8 C at 20 C air: with the 5 K margin no setpoint below ~19.8 C, so the 18 C step must wait
    stack.wetbox.humidity = 72.0
    time.sleep(2.5)
    stack.dcs.command("burnin", "start", recipe="sim-short", operator="pytest")
    deadline = time.time() + 600
    while not (stack.status()["step_name"] == "cool" and stack.status()["state"] == "HOLDING"):
        st = stack.status()
        assert time.time() < deadline and st["state"] in ("RUNNING", "HOLDING"), st
        time.sleep(0.5)
    st = stack.status()
    assert st["hold_auto"] is True and "waiting for dry air" in st["message"], st
    time.sleep(5.0)  # 20 s on the stand's clock
    julabo = stack.dcs.status("julabo")
    assert julabo["setpoint"] >= 19.7, julabo  # never below dew point + margin
    assert stack.status()["step_name"] == "cool" and stack.status()["state"] == "HOLDING"
    stack.wetbox.humidity = 5.0  # the dry air arrives: it goes on by itself
    st = stack.wait_state("DONE", "ABORTED", "FAILED", timeout=600)
    assert st["state"] == "DONE", st
