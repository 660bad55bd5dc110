"""The ``dcs`` command line, as scripts use it: exit codes, --json output, the status view."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from trackerdcs.cli import parse_assignments
from trackerdcs_devstack.localbroker import LocalBroker

DEMO = Path(__file__).with_name("demo_service.py")
DCS = Path(sys.executable).with_name("dcs")


@pytest.fixture(scope="module")
def demo_root() -> str:
    return "caen"


@pytest.fixture(scope="module")
def demo(broker: LocalBroker, demo_root: str) -> Iterator[None]:
    env = {**os.environ, **broker.env("caen"), "DCS_MQTT_CLIENT_ID": f"demo-{uuid.uuid4().hex[:6]}"}
    proc = subprocess.Popen([sys.executable, str(DEMO), demo_root], env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):  # until the demo service answers
            if dcs(broker, "--timeout", "1", "caen", "off").returncode == 0:
                break
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def dcs(broker: LocalBroker, *args: str, user: str = "operator", timeout: float = 20) -> subprocess.CompletedProcess:
    env = {**os.environ, **broker.env(user)}
    env.pop("DCS_CONFIG", None)
    return subprocess.run([str(DCS), *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_a_successful_command_exits_zero_and_prints_the_result(broker, demo):
    proc = dcs(broker, "caen", "on", "brightness=75")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")
    assert '"brightness": 75.0' in proc.stdout


def test_json_output_is_the_reply_document(broker, demo):
    proc = dcs(broker, "--json", "caen", "on", "brightness=20")
    reply = json.loads(proc.stdout)
    assert reply["ok"] is True and reply["command"] == "on" and reply["result"] == {"brightness": 20.0}


def test_a_refused_command_exits_one_with_the_reason(broker, demo):
    proc = dcs(broker, "caen", "on", "brightness=500")
    assert proc.returncode == 1
    assert "above the maximum 100" in proc.stderr
    proc = dcs(broker, "--json", "caen", "fail")
    assert proc.returncode == 1 and json.loads(proc.stdout)["error"] == "the lamp refuses"


def test_no_reply_exits_two(broker, demo):
    proc = dcs(broker, "--timeout", "1", "nosuchservice", "on")
    assert proc.returncode == 2 and "no reply" in proc.stderr


def test_a_read_only_user_gets_no_reply_not_an_action(broker, demo):
    proc = dcs(broker, "--timeout", "1", "caen", "on", user="monitor")
    assert proc.returncode == 2


def test_status_lists_each_service_with_availability_and_state(broker, demo):
    dcs(broker, "caen", "off")
    proc = dcs(broker, "status")
    assert proc.returncode == 0
    line = next(line for line in proc.stdout.splitlines() if line.startswith("caen"))
    assert "online" in line and "OFF" in line
    detail = dcs(broker, "status", "--detail").stdout
    assert "health: version=0.1.0" in detail and "commands_ok=" in detail
    view = json.loads(dcs(broker, "status", "--json").stdout)
    assert view["caen"]["availability"] == "online"
    assert view["caen"]["status"]["state"] == "OFF"
    assert view["caen"]["health"]["version"]


def test_unreachable_broker_exits_two_with_a_message(broker):
    proc = subprocess.run(
        [str(DCS), "--host", "127.0.0.1", "--port", "1", "status"],
        env={**os.environ, **broker.env("operator")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "cannot reach broker" in proc.stderr


def test_arguments_are_read_as_json_where_they_parse():
    assert parse_assignments(["value=-25.5", "on=true", "name=M1", "ids=[1,2]"]) == {
        "value": -25.5,
        "on": True,
        "name": "M1",
        "ids": [1, 2],
    }
    assert parse_assignments(["modules=M1", "modules=M2"]) == {"modules": ["M1", "M2"]}
    assert parse_assignments(["modules=[M1, M2]", "one=[M3]", "n=[1,2]"]) == {
        "modules": ["M1", "M2"],
        "one": ["M3"],
        "n": [1, 2],
    }
    assert parse_assignments(["12"], "ph2acf", "show") == {"run": 12}
    with pytest.raises(ValueError, match="expected key=value"):
        parse_assignments(["oops"], "caen", "lv_on")


def test_backup_and_restore_have_their_own_help():
    proc = subprocess.run([str(DCS), "backup", "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "--keep" in proc.stdout


def test_burnin_follow_prints_one_line_per_status_with_step_cycle_elapsed_eta_and_the_gate_message():
    from trackerdcs.cli import burnin_progress_line

    line = burnin_progress_line(
        {"state": "HOLDING", "step": 17, "steps": 127, "step_name": "cold plateau", "cycle": 3, "cycles": 17,
         "elapsed_s": 3725.0, "eta_s": 151200.0, "message": "waiting for dry air (dew point -12.1 C)"}
    )  # fmt: skip
    assert line == (
        "HOLDING   step 17/127 cold plateau  cycle 3/17  elapsed 1:02:05  ETA 42:00:00"
        "  | waiting for dry air (dew point -12.1 C)"
    )
    done = burnin_progress_line({"state": "DONE", "step": 11, "steps": 11, "step_name": "LV off", "cycles": 1,
                                 "elapsed_s": 60.0, "eta_s": None})  # fmt: skip
    assert done == "DONE      step 11/11 LV off  elapsed 0:01:00"  # no cycle column for a recipe without repeats
