"""The README's first command: the whole stack in simulation mode comes up, obeys operators, and stops cleanly.

This runs ``dcs-sim`` exactly as ``scripts/sim.sh`` does (after setup), on free loopback ports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trackerdcs.client import DcsClient
from trackerdcs.config import MqttSettings, load_yaml

DCS = Path(sys.executable).with_name("dcs")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sim_stack_launcher):
    var = tmp_path_factory.mktemp("sim")
    with sim_stack_launcher(var, "--no-node-red", timeout=90, expect="stack is up") as (proc, banner):
        yield proc, var, banner


def operator(var: Path) -> DcsClient:
    return DcsClient(MqttSettings.from_config(load_yaml(var / "dcs.yml")["mqtt"], env={}))


def test_every_service_is_online_with_its_simulated_device_connected(stack):
    _, var, banner = stack
    assert "export DCS_CONFIG=" in banner
    with operator(var) as dcs:
        for svc in ("caen", "julabo", "ph2acf", "burnin", "audit"):
            dcs.wait_for(f"{svc}/availability", lambda m: m.payload == b"online", timeout=10)
        assert dcs.status("caen")["connected"] is True
        dcs.wait_for("julabo/status", lambda m: m.json()["connected"] is True, timeout=15)
        assert dcs.status("ph2acf")["state"] == "IDLE"
        assert dcs.wait_for("env/box", timeout=10).json()["humidity"] >= 0


def test_without_node_red_there_is_no_interlock_and_power_on_is_refused_visibly(stack):
    """caen-fsm holds the interlock permit: no Node-RED, no interlock status, no power (the banner says so).
    Powering modules through the whole stack with the interlock is tests/gateway/test_end_to_end.py."""
    _, var, banner = stack
    assert "caen-fsm REFUSES lv_on/hv_on" in banner and "interlock status MISSING" in banner
    with operator(var) as dcs:
        dcs.wait_for("caen/status", lambda m: m.json().get("interlock") == "MISSING", timeout=20)
        reply = dcs.command("caen", "lv_on", {"modules": ["module_0"]}, check=False)
        assert reply["ok"] is False and "lv_on refused: interlock MISSING" in reply["error"]
        assert dcs.command("caen", "lv_off", modules=["module_0"])["ok"] is True  # switching off always works
        assert dcs.status("caen", "module/module_0")["state"] == "OFF"


def test_a_calibration_run_is_kept_on_disk_without_mongodb(stack):
    _, var, _ = stack
    with operator(var) as dcs:
        dcs.subscribe(["ph2acf/event"])
        time.sleep(0.3)
        dcs.command("ph2acf", "start", calibration="pixelalive", operator="pytest")
        stop = dcs.wait_for("ph2acf/event", lambda m: m.json()["kind"] == "run_stop", timeout=60).json()
        assert stop["outcome"] == "done"
        dcs.wait_for("ph2acf/status", lambda m: m.json()["state"] == "IDLE", timeout=30)
        runs = dcs.command("ph2acf", "runs")["result"]["runs"]
        assert runs and runs[0]["outcome"] == "done" and runs[0]["stored"] == "archive"


def test_the_commands_of_this_stack_are_in_its_audit_trail(stack):
    _, var, banner = stack
    assert "Audit trail" in banner
    with operator(var) as dcs:
        dcs.wait_for("audit/availability", lambda m: m.payload == b"online", timeout=10)
        dcs.command("caen", "lv_off", modules=["module_1"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            records = dcs.command("audit", "query", {"since": "10m", "service": "caen"})["result"]["records"]
            if any(r["command"] == "lv_off" and r["args"] == {"modules": ["module_1"]} for r in records):
                break
            time.sleep(0.2)
        [record] = [r for r in records if r["args"] == {"modules": ["module_1"]}]
        assert record["by"] == "operator" and record["reply"]["ok"] is True
    assert list((var / "audit").glob("audit-*.jsonl"))


def test_the_burn_in_sequencer_runs_in_the_stack_and_checks_recipes_against_this_stand(stack):
    _, var, _ = stack
    with operator(var) as dcs:
        assert dcs.status("burnin")["state"] == "IDLE"
        plan = dcs.command("burnin", "plan", recipe="sim-short")["result"]
        assert plan["steps"] == 11 and plan["estimate_s"] > 0, plan
        # the standard burn-in scans to 800 V: the simulated crate's channels are limited to 350 and 600 V, so it
        # is refused before anything moves, naming the step and the field
        reply = dcs.command("burnin", "plan", recipe="standard-burnin", check=False)
        assert reply["ok"] is False
        assert "(iv_scan): field 'profile': the scan goes to 800 V but module module_0" in reply["error"], reply


def test_every_service_publishes_its_command_table_and_dcs_help_is_built_from_it(stack):
    _, var, _ = stack
    with operator(var) as dcs:
        tables = {svc: dcs.commands(svc) for svc in ("caen", "julabo", "ph2acf", "burnin", "audit")}
    assert all(tables.values()), [svc for svc, table in tables.items() if not table]
    waits = {svc: sorted(c["name"] for c in t["commands"] if c["completion"]) for svc, t in tables.items()}
    assert waits == {"caen": ["hv_off", "hv_on", "lv_off", "lv_on"], "julabo": ["start", "stop"],
                     "ph2acf": ["abort", "start"], "burnin": ["start"], "audit": []}  # fmt: skip
    setpoint = next(c for c in tables["julabo"]["commands"] if c["name"] == "set_setpoint")
    value = next(a for a in setpoint["args"] if a["name"] == "value")
    # the limits configured for this chiller (dcs-sim: services/julabo-fsm/sim.yml, down to -40 C for the standard
    # burn-in's cold approach)
    assert (value["minimum"], value["maximum"]) == (-40.0, 40.0)
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "DCS_CONFIG": str(var / "dcs.yml")}
    shown = subprocess.run([str(DCS), "julabo", "set_setpoint", "--help"], env=env, capture_output=True, text=True,
                           timeout=30)  # fmt: skip
    assert shown.returncode == 0 and "value: required; -40 to 40" in " ".join(shown.stdout.split())


def test_ctrl_c_stops_every_process_and_services_go_offline(stack):
    proc, var, _ = stack
    with operator(var) as dcs:
        dcs.subscribe(["+/availability"])
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    leftovers = subprocess.run(["pgrep", "-f", str(var)], capture_output=True, text=True).stdout.split()
    assert leftovers == []
