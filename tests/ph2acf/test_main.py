"""The simulation-stack processes exactly as dcs-sim starts them: ph2acf-sim + ph2acf-bridge --config sim.yml,
no MongoDB: runs are kept on disk and listed by the bridge's runs/show commands."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from trackerdcs.client import DcsClient, NoReply
from trackerdcs_devstack.localbroker import LocalBroker, free_port, wait_port

from .conftest import BIN, FAST_SIM

SIM_YML = Path(__file__).resolve().parents[2] / "services" / "ph2acf-bridge" / "sim.yml"


def test_sim_stack_runs_a_calibration_keeps_it_on_disk_and_shuts_down_cleanly(
    broker: LocalBroker, operator: DcsClient, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    env.update(broker.env("ph2acf"), **FAST_SIM, PH2ACF_SIM_WORKDIR=str(tmp_path / "run"),
               PH2ACF_SIM_PORT=str(port), PH2ACF_DATA=str(tmp_path / "data"))  # fmt: skip
    env["DCS_MQTT_CLIENT_ID"] = f"ph2acf-main-{port}"
    sim = subprocess.Popen([str(BIN / "ph2acf-sim"), "--port", str(port), "--workdir", str(tmp_path / "run"),
                            "--write-example-xml", "CMSIT.xml"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    bridge = subprocess.Popen([str(BIN / "ph2acf-bridge"), "--config", str(SIM_YML)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_port("127.0.0.1", port, 15)
        operator.wait_for("ph2acf/status", lambda m: m.json()["mode"] == "tcp", timeout=15)
        operator.subscribe(["ph2acf/event"])
        deadline = time.monotonic() + 15
        while True:  # the bridge may still be subscribing to its command topics
            try:
                operator.command("ph2acf", "start", calibration="pixelalive", operator="bob", timeout=1)
                break
            except NoReply:
                assert time.monotonic() < deadline
        stop = operator.wait_for("ph2acf/event", lambda m: m.json()["kind"] == "run_stop", timeout=30).json()
        assert stop["outcome"] == "done"
        operator.wait_for("ph2acf/status", lambda m: m.json()["state"] == "IDLE", timeout=10)
        runs = operator.command("ph2acf", "runs")["result"]["runs"]
        assert [(r["run"], r["stored"], r["operator"]) for r in runs][:1] == [(stop["run"], "archive", "bob")]
        shown = operator.command("ph2acf", "show", run=stop["run"])["result"]["run"]
        assert shown["summary"]["totals"]["chips"] == 4
        assert Path(shown["archive_path"], "run.json").exists()
        assert list(Path(shown["archive_path"]).glob("Results.root"))
    finally:
        for proc in (bridge, sim):
            proc.send_signal(signal.SIGTERM)
        bridge_rc = bridge.wait(15)
        sim_rc = sim.wait(15)
    assert bridge_rc == 0, bridge.stderr.read() if bridge.stderr else ""
    assert sim_rc == 0
    assert operator.wait_for("ph2acf/availability", lambda m: m.payload == b"offline", timeout=5)
