"""Unauthorised clients, and device-side faults during operation: CAEN IOC restart, Julabo link cut and
restored, MongoDB gone during a calibration run. What the operator gets: no action from anyone without the
right, automatic recovery, nothing switched on by itself, no calibration result lost.

Tests run in file order on one stand (the last one replaces the stand's bridge with an in-process one).
"""

from __future__ import annotations

import time
import uuid

import pytest
from ph2acf_bridge.app import Bridge
from ph2acf_bridge.settings import load_settings
from ph2acf_bridge.store import MongoStore, RunStore

from trackerdcs.client import DcsClient, DcsError, NoReply
from trackerdcs_devstack.localbroker import free_port

from .conftest import record
from .stand import BIN, PH2ACF_SIM_ENV
from .test_fuzz import device_truth

pytestmark = pytest.mark.timeout(120)

FIGURES: dict[str, object] = {}

VALID_COMMANDS = [
    ("caen", "lv_on", {}),
    ("caen", "set", {"channel": "M0000_lv", "param": "V0Set", "value": 11.0}),
    ("julabo", "start", {}),
    ("julabo", "set_setpoint", {"index": 1, "value": 5.0}),
    ("ph2acf", "start", {"calibration": "pixelalive", "operator": "intruder"}),
]


def test_anonymous_and_wrong_password_clients_cannot_even_connect(broker, stand):
    with pytest.raises(DcsError, match="refused"):
        DcsClient(broker.settings(None), connect_timeout=5).connect()
    with pytest.raises(DcsError, match="refused"):
        DcsClient(broker.settings("operator", password_file=None, password="wrong"), connect_timeout=5).connect()


@pytest.mark.parametrize("user", ["monitor", "telegraf", "caen", "julabo", "ph2acf", "sensors", "viewer", "audit"])
def test_clients_without_command_rights_move_nothing(broker, stand, user):
    before = device_truth(stand)
    with DcsClient(broker.settings(user)) as client:
        for service, command, args in VALID_COMMANDS:
            if user == service:
                continue  # a service account owns its tree (it receives its own commands)
            with pytest.raises(NoReply):
                client.command(service, command, args, timeout=0.4)  # a reply takes ms
    time.sleep(0.5)
    assert device_truth(stand) == before


def test_caen_ioc_restart_recovers_by_itself_and_switches_nothing_on(stand, watcher):
    # the chiller runs before LV goes on (caen-fsm follows the chiller's own status, not only the interlock)
    watcher.command("julabo", "start", timeout=10)
    watcher.wait_for("julabo/status", lambda m: m.json()["state"] == "RUNNING", timeout=15)
    try:
        _ioc_restart(stand, watcher)
    finally:
        watcher.command("julabo", "stop", timeout=10)
        watcher.wait_for("julabo/status", lambda m: m.json()["state"] == "STOPPED", timeout=15)


def _ioc_restart(stand, watcher) -> None:
    watcher.command("caen", "lv_on", modules=["M0001"])
    watcher.wait_for("caen/status/module/M0001", lambda m: m.json()["state"] == "LV_ON", timeout=10)
    puts_before = stand.ca_read(["SIM:PwOnPuts"])["SIM:PwOnPuts"]
    stand.kill_caen_sim()
    watcher.wait_for("caen/status", lambda m: m.json()["connected"] is False, timeout=15)
    restarted = time.time()
    stand.start_caen_sim()  # a fresh IOC: every channel off
    status = watcher.wait_for(
        "caen/status", lambda m: m.json()["connected"] is True and m.json()["ts"] >= restarted, timeout=30
    ).json()
    FIGURES["caen_ioc_restart_recovery_s"] = round(status["ts"] - restarted, 2)
    time.sleep(1.5)
    assert stand.ca_read(["SIM:PwOnPuts"])["SIM:PwOnPuts"] == 0 <= puts_before
    assert watcher.status("caen")["state"] == "OFF"
    assert watcher.command("caen", "refresh")["ok"]


def test_julabo_link_cut_and_restored_recovers_and_never_starts_the_chiller(stand, watcher):
    watcher.command("julabo", "set_setpoint", index=1, value=12.5, timeout=10)
    since = time.time()
    stand.julabo_control("unplug")
    watcher.wait_for("julabo/status", lambda m: m.json()["connected"] is False and m.json()["ts"] >= since, 15)
    cut = time.time() - since
    restored = time.time()
    stand.julabo_control("replug")
    status = watcher.wait_for(
        "julabo/status",
        lambda m: m.json()["connected"] is True and m.json()["ts"] >= restored and m.json()["setpoint_1"] is not None,
        timeout=20,
    ).json()
    FIGURES["julabo_link_cut_detected_s"] = round(cut, 2)
    FIGURES["julabo_link_restored_recovery_s"] = round(status["ts"] - restored, 2)
    assert status["setpoint_1"] == 12.5 and status["state"] == "STOPPED"
    time.sleep(1.0)
    assert stand.julabo_state()["running"] is False


def test_mongodb_gone_during_a_run_loses_no_calibration_result(broker, stand, watcher, tmp_path):
    stand_bridge = stand.procs["ph2acf-bridge"]
    stand_bridge.terminate()  # this test runs its own bridge on the ph2acf topics
    stand_bridge.wait(20)
    work = tmp_path / "run"
    work.mkdir()
    (work / "CMSIT.xml").write_text((stand.ph2acf_workdir / "CMSIT.xml").read_text())
    settings = load_settings(
        {
            "ph2acf": {
                "stand": "reliability", "mode": "subprocess", "workdir": str(work),
                "base_dir": str(tmp_path / "Ph2_ACF"),
                "subprocess": {"executable": str(BIN / "CMSITminiDAQ"), "env": {**PH2ACF_SIM_ENV,
                               "PH2ACF_SIM_DURATION": "3"}},
            },
            "storage": {**{k: str(tmp_path / k) for k in ("archive_dir", "spool_dir", "state_dir")},
                        "replay_interval_s": 0.3},
        }
    )  # fmt: skip
    mongo = MongoStore.from_uri("mongomock://", f"rel_{uuid.uuid4().hex[:6]}")
    healthy = mongo.client_factory
    down = MongoStore.from_uri(f"mongodb://127.0.0.1:{free_port()}/", "down", timeout_ms=300).client_factory
    bridge = Bridge(settings, broker.settings("ph2acf", client_id=f"ph2acf-rel-{uuid.uuid4().hex[:6]}"),
                    store=RunStore(settings.archive_dir, settings.spool_dir, mongo))  # fmt: skip
    bridge.start()
    try:
        assert bridge.svc.wait_connected(10)
        watcher.wait_for("ph2acf/status", lambda m: m.json()["mongo_ok"] is True, timeout=10)
        events: list[dict] = []
        watcher.watch("ph2acf/event", lambda m: events.append(m.json()))
        uid = watcher.command("ph2acf", "start", calibration="pixelalive", operator="rel")["result"]["uid"]
        watcher.wait_for("ph2acf/event", lambda m: m.json()["kind"] == "run_start", timeout=15)
        mongo.replace_client_factory(down)  # MongoDB goes away in the middle of the run
        watcher.wait_for("ph2acf/status", lambda m: m.json()["spooled"] == 1, timeout=30)
        assert next(e for e in events if e["kind"] == "run_stop")["outcome"] == "done"
        back = time.time()
        mongo.replace_client_factory(healthy)
        status = watcher.wait_for(
            "ph2acf/status", lambda m: m.json()["spooled"] == 0 and m.json()["mongo_ok"] is True, timeout=15
        ).json()
        FIGURES["mongo_back_to_uploaded_s"] = round(status["ts"] - back, 2)
        doc = mongo._db()["runs"].find_one({"uid": uid})
        archived = watcher.command("ph2acf", "show", run=doc["run"])["result"]["run"]
        assert doc["outcome"] == "done" and doc["summary"]["totals"]["chips"] >= 1
        assert doc["summary"] == archived["summary"]  # the same result as in the archive, nothing lost
        assert mongo.read_file(doc["result_file"]["gridfs_id"])[:4] == b"root"
        assert (settings.archive_dir / uid / "run.json").exists()
    finally:
        bridge.stop(timeout=15)
    record("faults", FIGURES)
