"""The burn-in sequencer on the whole simulation stack, as an operator runs it: the short recipe end to end from
the command line, and a sequencer killed mid-step that comes back PAUSED there and commands nothing."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from .png_reader import decode_png
from .stack_harness import DCS, STACK_MARKS, _json, commands_from_burnin, telegraf_model

TELEGRAF = telegraf_model()

pytestmark = STACK_MARKS


def test_short_recipe_runs_end_to_end(stack):
    """Started from the command line with --follow, which prints the progress and returns when it is DONE."""
    stack.ready()
    argv = [str(DCS), "--config", str(stack.var / "dcs.yml"), "burnin", "start", "sim-short", "operator=pytest",
            "comment=e2e", "--follow"]  # fmt: skip
    follow = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert follow.returncode == 0, follow.stdout + follow.stderr
    uid = re.search(r'"uid": "([^"]+)"', follow.stdout).group(1)
    progress = [line for line in follow.stdout.splitlines() if line.startswith(("RUNNING", "HOLDING", "DONE"))]
    assert progress[-1].startswith("DONE"), follow.stdout
    assert any("step 4/11 IV scan warm" in line and "ETA" in line for line in progress), follow.stdout
    assert "[info] step_end: step 11 LV off: done" in follow.stdout, follow.stdout  # the events, as they come
    history = stack.status()
    assert history["state"] == "DONE" and history["uid"] == uid, history
    doc = json.loads((stack.var / "burnin" / "archive" / uid / "burnin.json").read_text())
    assert [s["outcome"] for s in doc["steps"]] == ["done"] * 11, doc["steps"]
    assert doc["calibrations"][0]["outcome"] == "done"
    scans = list((stack.var / "burnin" / "archive" / uid / "iv").glob("*.json"))
    assert len(scans) == 1
    iv = json.loads(scans[0].read_text())["modules"]
    for module, scan in iv.items():
        assert scan["outcome"] == "done", (module, scan)
        assert [p["set_v"] for p in scan["points"]] == [0, -20, -40, -60, -80, -100, -150, -200]
        for p in scan["points"]:
            assert abs(p["vmon"] - p["set_v"]) <= 2.0 and p["ts"] is not None
    # the scan restored the operating bias (caen-fsm applies remembered set values on the next hv_on)
    v0 = {t: m.json()["v0set"] for t, m in stack.dcs.latest("caen/status/channel/+").items() if t.endswith("_hv")}
    assert v0["caen/status/channel/module_1_hv"] == pytest.approx(200.0) and history["state"] == "DONE"
    assert stack.dcs.status("caen")["state"] == "OFF"
    shown = stack.dcs.command("burnin", "iv", module="module_1")["result"]["scans"]  # what dcs burnin iv prints
    assert shown[0]["burnin"] == uid and shown[0]["outcome"] == "done" and len(shown[0]["points"]) == 8
    # a picture of the scan next to its JSON, with the scan's size and a curve per module
    width, height, _ = decode_png(scans[0].with_suffix(".png").read_bytes())
    assert (width, height) == (1000, 640)
    # the sequencer's Grafana markers as Telegraf would write them (telegraf.conf's mapping replayed in Python:
    # no Telegraf here): start, the IV scan of step 4 and the end of this burn-in, tagged service=burnin
    conf = TELEGRAF.load(env=TELEGRAF.default_env())
    lines = [
        lp
        for m in list(stack.messages)
        if m.topic == "burnin/event" and _json(m).get("uid") == uid
        for lp in TELEGRAF.translate(conf, m.topic, m.payload, m.received)
    ]
    marks = [lp for lp in lines if re.match(r"dcs_event,kind=(burnin_start|iv_scan|burnin_end),service=burnin,", lp)]
    assert [re.search(r"kind=(\w+)", lp).group(1) for lp in marks] == ["burnin_start", "iv_scan", "burnin_end"]
    assert all(f'uid="{uid}"' in lp for lp in marks), marks
    assert 'recipe="sim-short"' in marks[0] and "step=4i" in marks[1] and 'outcome="done"' in marks[2], marks


def test_killed_mid_step_comes_back_paused_there_and_commands_nothing(stack):
    stack.ready()
    stack.start_short_recipe_until("IV scan warm")
    deadline = time.time() + 60
    while not re.search(r"module_0 \w+ [2-6]/8", stack.status()["message"]):  # mid-scan: some points measured
        assert time.time() < deadline, stack.status()
        time.sleep(0.05)
    stack.kill_burnin()
    killed = time.time()
    stack.start_burnin()
    st = stack.status()
    assert st["state"] == "PAUSED" and st["step_name"] == "IV scan warm", st
    time.sleep(3.0)
    assert commands_from_burnin(stack, killed) == [], "a restarted sequencer must command nothing by itself"
    assert stack.status()["state"] == "PAUSED"
    stack.dcs.command("burnin", "resume", operator="pytest")
    st = stack.wait_state("DONE", "ABORTED", "FAILED", "HOLDING", timeout=900)
    assert st["state"] == "DONE", st
    hist = stack.dcs.command("burnin", "status")["result"]["history"]
    iv = [h["outcome"] for h in hist if h["name"] == "IV scan warm"]
    assert iv[0] == "interrupted" and iv[-1] == "done"
