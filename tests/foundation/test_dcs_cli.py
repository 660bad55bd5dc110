"""The ``dcs`` command line, as scripts use it: exit codes, --json output, the status view."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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


# ---------------------------------------------------------------------------------------------- command tables
def test_every_service_publishes_its_command_table_retained(broker, demo):
    from trackerdcs.client import DcsClient

    with DcsClient(broker.settings("monitor")) as monitor:
        table = monitor.commands("caen")
    assert table is not None and table["service"] == "caen"
    ramp = next(c for c in table["commands"] if c["name"] == "ramp")
    assert [a["name"] for a in ramp["args"]] == ["target", "rate"]
    assert ramp["args"][0]["maximum"] == 100 and ramp["completion"]["done"] == ["ON", "OFF"]


def test_service_help_comes_from_the_published_table(broker, demo):
    proc = dcs(broker, "caen", "--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "target=NUMBER [rate=NUMBER] ramp the brightness" in text and "(--wait: until ramp ended)" in text
    proc = dcs(broker, "caen", "ramp", "--help")
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 0 and "target: required; 0 to 100; brightness to reach" in text
    assert "state in ON, OFF; fails at BLOWN; time limit 20 s" in text


def test_a_command_the_service_does_not_have_is_a_usage_error_and_is_not_sent(broker, demo):
    before = json.loads(dcs(broker, "--json", "status", "caen").stdout)["caen"]["health"]["commands_failed"]
    proc = dcs(broker, "caen", "explode")
    assert proc.returncode == 64 and "invalid choice: 'explode'" in proc.stderr
    after = json.loads(dcs(broker, "--json", "status", "caen").stdout)["caen"]["health"]["commands_failed"]
    assert after == before


# ---------------------------------------------------------------------------------------------- --wait
def test_wait_follows_a_ramp_to_its_end_with_a_progress_line(broker, demo):
    assert dcs(broker, "caen", "replace").returncode == 0
    proc = dcs(broker, "caen", "ramp", "target=40", "--wait")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok") and proc.stdout.rstrip().endswith("done: caen ON brightness=40")
    progress = proc.stderr.splitlines()
    assert progress[0].startswith("caen ramp: caen RAMPING brightness=") and progress[0].endswith("/20 s")
    assert progress[-1].startswith("caen ramp: caen ON brightness=40")


def test_wait_exits_one_with_the_reason_when_the_target_fails(broker, demo):
    assert dcs(broker, "caen", "replace").returncode == 0
    proc = dcs(broker, "caen", "ramp", "target=99", "--wait")
    assert proc.returncode == 1
    assert "dcs: caen ramp failed: caen BLOWN brightness=95 (expected ON or OFF)" in proc.stderr
    assert dcs(broker, "caen", "ramp", "target=10").returncode == 1  # and the service says so from now on
    assert dcs(broker, "caen", "replace").returncode == 0


def test_wait_exits_three_when_the_time_limit_runs_out(broker, demo):
    assert dcs(broker, "caen", "replace").returncode == 0
    proc = dcs(broker, "caen", "ramp", "target=60", "rate=5", "--wait", "--timeout", "1")
    assert proc.returncode == 3, proc.stderr
    assert "caen ramp not done within 1 s: caen RAMPING brightness=" in proc.stderr
    assert "(waiting for ON or OFF); the action may still be under way" in proc.stderr


def test_ctrl_c_stops_the_wait_but_not_the_action(broker, demo):
    assert dcs(broker, "caen", "replace").returncode == 0
    env = {**os.environ, **broker.env("operator")}
    env.pop("DCS_CONFIG", None)
    argv = [str(DCS), "caen", "ramp", "target=60", "rate=5", "--wait"]
    # Ctrl-C as a terminal gives it: the suite may itself run with SIGINT ignored (started in the background by
    # a non-interactive shell, as CI and the clean-root check do), and an ignored signal is inherited
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.stderr.readline().startswith("caen ramp: caen RAMPING")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and "stopped waiting; caen ramp goes on (dcs status caen)" in err
    time.sleep(0.5)
    status = json.loads(dcs(broker, "--json", "status", "caen").stdout)["caen"]["status"]
    assert status["state"] == "RAMPING" and status["brightness"] > 2.5  # still ramping


def test_wait_with_json_prints_the_reply_and_the_outcome(broker, demo):
    assert dcs(broker, "caen", "replace").returncode == 0
    proc = dcs(broker, "caen", "--json", "ramp", "target=20", "rate=100", "--wait")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True and doc["result"] == {"target": 20.0}
    assert doc["outcome"]["done"] is True and doc["outcome"]["status"]["caen/status"]["brightness"] == 20.0


def test_wait_on_a_command_whose_reply_is_its_outcome_is_a_usage_error(broker, demo):
    proc = dcs(broker, "caen", "on", "--wait")
    assert proc.returncode == 64 and "nothing to wait for (its reply is the outcome)" in proc.stderr


# ---------------------------------------------------------------------------------------------- global options
@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "caen", "on", "brightness=30"],
        ["caen", "--json", "on", "brightness=30"],
        ["caen", "on", "brightness=30", "--json"],
        ["caen", "on", "--json", "--timeout", "5", "brightness=30"],
    ],
)
def test_global_options_work_before_or_after_the_subcommand(broker, demo, argv):
    proc = dcs(broker, *argv)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["result"] == {"brightness": 30.0}


def test_status_takes_global_options_after_it(broker, demo):
    proc = dcs(broker, "status", "caen", "--json", "--timeout", "3")
    assert proc.returncode == 0 and json.loads(proc.stdout)["caen"]["availability"] == "online"


@pytest.mark.parametrize("where", ["before", "after"])
def test_backup_takes_json_before_or_after_it(tmp_path, where):
    data = tmp_path / "mosquitto"
    data.mkdir()
    (data / "mosquitto.db").write_bytes(b"retained")
    options = ["--dest", str(tmp_path / "b"), "--components", "mosquitto", "--dir", f"mosquitto={data}"]
    argv = ["--json", "backup", *options] if where == "before" else ["backup", *options, "--json"]
    proc = subprocess.run([str(DCS), *argv], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True and doc["components"] == ["mosquitto"] and Path(doc["backup"]).is_dir()


def test_a_usage_error_exits_64_whatever_the_subcommand():
    for argv in (["status", "--bogus"], ["--bogus"], ["audit", "--limit", "x"], ["backup", "--keep", "x"], []):
        proc = subprocess.run([str(DCS), *argv], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 64, (argv, proc.stderr)


# ---------------------------------------------------------------------------------------------- completion
def complete(script: str, line: str) -> list[str]:
    """What bash offers for TAB at the end of ``line`` with the completion ``script`` loaded."""
    probe = f"{script}\nCOMP_LINE={json.dumps(line)}; COMP_POINT=${{#COMP_LINE}}; _dcs\n"
    probe += 'printf "%s\\n" "${COMPREPLY[@]}"'
    proc = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return sorted(w for w in proc.stdout.splitlines() if w)


def test_shell_completion_offers_services_commands_and_arguments_from_the_tables(broker, demo):
    proc = dcs(broker, "completion", "bash")
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    assert complete(script, "dcs c") == ["caen", "completion"]
    assert complete(script, "dcs --json caen r") == ["ramp", "replace"]
    assert complete(script, "dcs caen ramp ta") == ["target="]
    assert "--wait" in complete(script, "dcs caen ramp target=5 ")
    assert "--wait" not in complete(script, "dcs caen on ")
    assert complete(script, "dcs st") == ["status"]


def test_completion_without_a_broker_still_completes_the_built_in_subcommands():
    proc = subprocess.run([str(DCS), "--host", "127.0.0.1", "--port", "1", "completion", "bash"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert proc.returncode == 0 and "built-in subcommands only" in proc.stderr
    assert complete(proc.stdout, "dcs re") == ["restore"]


def test_the_python_api_waits_the_same_way(broker, demo):
    from trackerdcs.client import ActionFailed, ActionTimeout, DcsClient, DcsError

    with DcsClient(broker.settings("operator")) as client:
        client.command("caen", "replace")
        seen: list[str] = []
        reply = client.command("caen", "ramp", target=30, rate=100, wait=True,
                               progress=lambda tracker, elapsed: seen.append(tracker.verdict))  # fmt: skip
        assert reply["outcome"]["caen/status"]["state"] == "ON" and seen[-1] == "done"
        with pytest.raises(ActionTimeout, match=r"not done within 0\.5 s"):
            client.command("caen", "ramp", target=80, rate=2, wait=0.5)
        with pytest.raises(ActionFailed, match="BLOWN") as failed:
            client.command("caen", "ramp", target=99, rate=200, wait=True)
        assert failed.value.reply["ok"] is True  # accepted; its outcome failed
        with pytest.raises(DcsError, match="publishes no outcome for 'on'"):
            client.command("caen", "on", wait=True)
        client.command("caen", "replace")
