"""The bridge over real MQTT: calibration runs from ph2acf/cmd/start to a stored run document.

Every test runs a real Mosquitto (ACL on), the real simulator executables or TCP server, and the MongoDB
named in the test id (``[mongomock]`` = the in-process stand-in, ``[mongodb]`` = MONGODB_URI).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ph2acf_bridge.app import Bridge
from ph2acf_bridge.settings import load_settings
from ph2acf_bridge.store import MongoStore, RunStore

from trackerdcs.client import CommandFailed, DcsClient, Message, NoReply
from trackerdcs_devstack.localbroker import LocalBroker, free_port, wait_port

from .conftest import BIN, FAST_SIM, sim_env, unreachable_mongo

RUN_TIMEOUT = 30


class Recorder:
    """Everything published on a topic pattern from now on, decoded."""

    def __init__(self, client: DcsClient, pattern: str) -> None:
        self.messages: list[Message] = []
        client.watch(pattern, self.messages.append)

    def docs(self, kind: str | None = None) -> list[dict[str, Any]]:
        out = [m.json() for m in list(self.messages) if m.payload]
        return [d for d in out if kind is None or d.get("kind") == kind]

    def wait(self, kind: str, timeout: float = RUN_TIMEOUT, count: int = 1) -> dict[str, Any]:
        """The ``count``-th event of ``kind`` seen by this recorder."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.docs(kind)
            if len(found) >= count:
                return found[count - 1]
            time.sleep(0.02)
        raise AssertionError(f"no {kind} event within {timeout} s; saw {[d.get('kind') for d in self.docs()]}")


def wait_answering(broker: LocalBroker, bridge: Bridge, timeout: float = 10) -> None:
    """Block until the bridge answers commands. ``Service.wait_connected`` returns on CONNACK, before the broker
    has necessarily processed the bridge's SUBSCRIBE to its command topics."""
    assert bridge.svc.wait_connected(timeout)
    deadline = time.monotonic() + timeout
    with DcsClient(broker.settings("operator")) as probe:
        while True:
            try:
                probe.command(bridge.settings.root, "status", timeout=0.5)
                return
            except NoReply:
                assert time.monotonic() < deadline, "bridge does not answer commands"


@pytest.fixture
def make_bridge(broker: LocalBroker, tmp_path: Path) -> Iterator[Callable[..., Bridge]]:
    bridges: list[Bridge] = []

    def make(
        workdir: Path,
        store_mongo: MongoStore | None,
        *,
        mode: str = "subprocess",
        env: dict[str, str] | None = None,
        tcp_port: int = 0,
        flavour: str = "it",
        replay_interval_s: float = 3600,
        release: str = "2021-2022",
        **ph2: Any,
    ) -> Bridge:
        state = tmp_path / f"bridge-{len(bridges)}"
        config = {
            "ph2acf": {
                "mode": mode,
                "flavour": flavour,
                "stand": "test",
                "workdir": str(workdir),
                "config_file": "CMSIT.xml" if flavour == "it" else "OT.xml",
                "base_dir": str(tmp_path / "Ph2_ACF"),
                "subprocess": {
                    "executable": str(BIN / ("CMSITminiDAQ" if flavour == "it" else "runCalibration")),
                    "env": {**FAST_SIM, **(env or {})},
                    "abort_grace_s": 3,
                },
                "tcp": {"port": tcp_port or 1, "poll_s": 0.1, "timeout_s": 5, "release": release},
                **ph2,
            },
            "storage": {
                "archive_dir": str(state / "archive"),
                "spool_dir": str(state / "spool"),
                "state_dir": str(state / "state"),
                "replay_interval_s": replay_interval_s,
            },
        }
        settings = load_settings(config)
        store = RunStore(settings.archive_dir, settings.spool_dir, store_mongo)
        bridge = Bridge(
            settings, broker.settings("ph2acf", client_id=f"ph2acf-test-{uuid.uuid4().hex[:8]}"), store=store
        )
        bridge.start()
        bridges.append(bridge)
        wait_answering(broker, bridge)
        return bridge

    yield make
    for bridge in bridges:
        bridge.stop(timeout=15)


@pytest.fixture
def sim_server(it_workdir: Path) -> Iterator[Callable[..., tuple[int, subprocess.Popen[str]]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(
        flavour: str = "it", release: str = "2019-2022", framing: str = "len8", **env: str
    ) -> tuple[int, subprocess.Popen[str]]:
        port = free_port()
        argv = [str(BIN / "ph2acf-sim"), "--port", str(port), "--workdir", str(it_workdir), "--flavour", flavour,
                "--release", release] + (["--framing", framing] if release == "2019-2022" else [])  # fmt: skip
        log = it_workdir.parent / f"ph2acf-sim-{port}.log"  # the server's command log (stderr)
        with log.open("w") as sink:
            proc = subprocess.Popen(argv, env=sim_env(**env), stdout=subprocess.DEVNULL, stderr=sink, text=True)
        procs.append(proc)
        wait_port("127.0.0.1", port, 15)
        return port, proc

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


CONDITIONS = [
    ("caen", "caen/status", {"state": "HV_ON", "connected": True, "modules_total": 1, "modules_hv_on": 1,
                             "modules_tripped": 0}),
    ("caen", "caen/status/module/M1", {"module": "M1", "state": "HV_ON", "hv_vmon": -300.2, "hv_imon": 1.7,
                                       "lv_vmon": 11.0, "lv_imon": 2.1}),
    ("julabo", "julabo/status", {"state": "RUNNING", "bath_temp": -29.8, "setpoint": -30.0}),
    ("sensors", "env/box.1", {"temperature": -20.5, "humidity": 1.2}),
]  # fmt: skip


@pytest.fixture
def conditions(broker: LocalBroker) -> Iterator[None]:
    """Retained CAEN, Julabo and environment readings, published by their own MQTT users; removed afterwards so
    other services' tests on the same broker do not see them."""

    def publish(clear: bool) -> None:
        for user, topic, payload in CONDITIONS:
            with DcsClient(broker.settings(user)) as client:
                body = b"" if clear else json.dumps({**payload, "ts": time.time()})
                client.client.publish(topic, body, qos=1, retain=True).wait_for_publish(5)

    publish(clear=False)
    yield
    publish(clear=True)


def start(operator: DcsClient, **args: Any) -> dict[str, Any]:
    payload = {"calibration": "scurve", "operator": "alice", "modules": ["M1"], **args}
    return operator.command("ph2acf", "start", payload)


def test_subprocess_run_is_announced_summarised_and_stored_with_conditions(
    conditions: None, operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore
) -> None:
    bridge = make_bridge(it_workdir, mongo)
    events = Recorder(operator, "ph2acf/event")
    statuses = Recorder(operator, "ph2acf/status")
    time.sleep(0.3)  # conditions arrive at the bridge
    reply = start(operator, comment="first light")
    assert reply["result"]["state"] == "STARTING"
    started = events.wait("run_start")
    stopped = events.wait("run_stop")
    assert bridge.wait_idle(RUN_TIMEOUT)
    assert started["run"] == 0 and started["operator"] == "alice" and started["modules"] == ["M1"]
    assert stopped["outcome"] == "done" and stopped["start_ts"] == started["start_ts"]
    running = [s for s in statuses.docs() if s["state"] == "RUNNING"]
    assert any(0 < s["progress"] < 100 for s in running), "progress was published during the run"
    assert running[-1]["run"] == 0 and running[-1]["mode"] == "subprocess"

    doc = mongo._db()["runs"].find_one({"run": 0})
    assert (doc["start_ts"], doc["stop_ts"]) == (stopped["start_ts"], stopped["stop_ts"])  # same clock as Influx
    assert doc["outcome"] == "done" and doc["comment"] == "first light" and doc["calibration_name"] == "SCurve"
    assert "<HwDescription>" in doc["config_xml"]
    assert doc["summary"]["totals"] == {"chips": 2, "channels": 2 * 48 * 40, "dead": 2, "noisy": 2, "histograms": 8,
                                         "unreadable": 0}  # fmt: skip
    assert mongo.read_file(doc["result_file"]["gridfs_id"])[:4] == b"root"
    start_conditions = doc["conditions"]["start"]
    assert start_conditions["caen"]["system"]["state"] == "HV_ON"
    assert start_conditions["caen"]["modules"]["M1"]["hv_vmon"] == -300.2
    assert start_conditions["julabo"]["bath_temp"] == -29.8
    assert start_conditions["env"]["box_1"]["temperature"] == -20.5
    assert doc["conditions"]["end"]["taken_ts"] >= doc["stop_ts"]

    final = operator.status("ph2acf")
    assert final is not None
    final = operator.wait_for("ph2acf/status", lambda m: m.json()["state"] == "IDLE", timeout=5).json()
    assert final["mongo_ok"] is True and final["spooled"] == 0 and final["run"] is None

    runs = operator.command("ph2acf", "runs", {"limit": 5})["result"]["runs"]
    assert [(r["run"], r["outcome"], r["dead"]) for r in runs] == [(0, "done", 2)]
    shown = operator.command("ph2acf", "show", {"run": 0})["result"]["run"]
    assert shown["uid"] == doc["uid"] and shown["summary"]["chips"][0]["chip"] == "B0_O0_H0_C0"
    with pytest.raises(CommandFailed, match="run 99 not found"):
        operator.command("ph2acf", "show", {"run": 99})


def test_second_start_is_refused_while_running_and_abort_stops_the_run(
    operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore
) -> None:
    bridge = make_bridge(it_workdir, mongo, env={"PH2ACF_SIM_DURATION": "60", "PH2ACF_SIM_STEPS": "600"})
    events = Recorder(operator, "ph2acf/event")
    start(operator, calibration="pixelalive")
    events.wait("run_start")
    operator.wait_for("ph2acf/status", lambda m: m.json()["progress"] > 0, timeout=10)
    with pytest.raises(CommandFailed, match="already in progress"):
        start(operator)
    t0 = time.monotonic()
    reply = operator.command("ph2acf", "abort")
    assert reply["result"]["state"] == "ABORTING"
    stopped = events.wait("run_stop")
    assert stopped["outcome"] == "aborted"
    assert time.monotonic() - t0 < 10
    assert bridge.wait_idle(RUN_TIMEOUT)
    doc = mongo._db()["runs"].find_one({"uid": stopped["uid"]})
    assert doc["outcome"] == "aborted" and doc["abort_reason"] == "operator request"
    # CMSITminiDAQ dies on SIGINT without closing files: no results, but its run number is not reused
    assert doc["result_file"] is None and doc["summary"] is None
    assert (it_workdir / "RunNumber.txt").read_text().strip() == str(stopped["run"] + 1)
    with pytest.raises(CommandFailed, match="no run to abort"):
        operator.command("ph2acf", "abort")


def test_crash_mid_run_is_stored_as_failed_and_raises_an_alarm(
    operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore
) -> None:
    bridge = make_bridge(it_workdir, mongo, env={"PH2ACF_SIM_CRASH_AT": "50"})
    events = Recorder(operator, "ph2acf/event")
    start(operator)
    stopped = events.wait("run_stop")
    alarm = events.wait("error")
    assert stopped["outcome"] == "failed"
    assert alarm["severity"] == "alarm"
    assert "killed by SIGABRT" in alarm["error"] and "terminate called" in alarm["error"]
    assert bridge.wait_idle(RUN_TIMEOUT)
    status = operator.wait_for("ph2acf/status", lambda m: m.json()["state"] == "ERROR", timeout=5).json()
    # the status names the run that ended, how and why: a sequencer needs no round trip for the outcome
    assert (status["last_uid"], status["last_outcome"]) == (stopped["uid"], "failed")
    assert "killed by SIGABRT" in status["last_error"]
    doc = mongo._db()["runs"].find_one({"uid": stopped["uid"]})
    assert doc["outcome"] == "failed" and doc["exit_code"] == -6 and doc["result_file"] is None
    assert any("terminate called" in line for line in doc["log_tail"])


def test_unknown_calibration_is_refused_before_anything_runs(
    operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore
) -> None:
    bridge = make_bridge(it_workdir, mongo)
    with pytest.raises(CommandFailed, match="'warpdrive' is not one of"):
        start(operator, calibration="warpdrive")
    with pytest.raises(CommandFailed, match="'pedenoise' is not one of"):  # an outer-tracker one on an IT stand
        start(operator, calibration="pedenoise")
    assert bridge.status()["state"] == "IDLE"
    assert not (it_workdir / "RunNumber.txt").exists()


def test_bad_input_gets_clear_errors_and_the_bridge_keeps_working(
    operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore
) -> None:
    bridge = make_bridge(it_workdir, mongo)
    replies = Recorder(operator, "ph2acf/reply")
    operator.client.publish("ph2acf/cmd/start", b"{calibration: scurve", qos=1)
    cases = [
        ({"calibration": 5, "operator": "a"}, "must be a string"),
        ({"calibration": "scurve", "operator": "a", "modules": "M1"}, "must be a list"),
        ({"calibration": "scurve"}, "missing argument 'operator'"),
        ({"calibration": "scurve", "operator": "   "}, "operator must not be empty"),
        ({"calibration": "scurve", "operator": "a", "hv": 800}, "unknown argument"),
        ({"calibration": "scurve", "operator": "a", "config_file": "../../../etc/passwd"}, "outside the allowed"),
        ({"calibration": "scurve", "operator": "a", "config_file": "missing.xml"}, "does not exist"),
    ]
    for args, message in cases:
        with pytest.raises(CommandFailed, match=message):
            operator.command("ph2acf", "start", args)
    with pytest.raises(CommandFailed, match="above the maximum"):
        operator.command("ph2acf", "runs", {"limit": 10_000})
    with pytest.raises(CommandFailed, match="unknown command"):
        operator.command("ph2acf", "launch_missiles")
    deadline = time.monotonic() + 5
    while not any("malformed JSON" in (d.get("error") or "") for d in replies.docs()):
        assert time.monotonic() < deadline, replies.docs()
        time.sleep(0.02)
    assert operator.command("ph2acf", "status")["result"]["state"] == "IDLE"
    assert bridge.status()["state"] == "IDLE" and not (it_workdir / "RunNumber.txt").exists()


def test_mongodb_outage_spools_the_run_and_uploads_it_when_mongodb_returns(
    operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore
) -> None:
    down = unreachable_mongo(mongo.database)
    bridge = make_bridge(it_workdir, down, replay_interval_s=0.3)
    events = Recorder(operator, "ph2acf/event")
    start(operator)
    stopped = events.wait("run_stop")
    spool = events.wait("spool")
    assert spool["severity"] == "warning" and stopped["run"] == 0
    status = operator.wait_for("ph2acf/status", lambda m: m.json()["spooled"] == 1, timeout=10).json()
    assert status["mongo_ok"] is False and status["state"] == "IDLE"
    assert operator.command("ph2acf", "runs")["result"]["runs"][0]["stored"] == "spool"

    down.replace_client_factory(mongo.client_factory)  # MongoDB is back
    status = operator.wait_for("ph2acf/status", lambda m: m.json()["spooled"] == 0, timeout=10).json()
    assert status["mongo_ok"] is True
    doc = mongo._db()["runs"].find_one({"uid": stopped["uid"]})
    assert doc["start_ts"] == stopped["start_ts"] and doc["summary"]["totals"]["chips"] == 2
    assert mongo.read_file(doc["result_file"]["gridfs_id"])[:4] == b"root"
    assert any(e.get("uploaded") == 1 for e in events.docs("spool"))
    assert bridge.store.spooled() == []


def test_tcp_mode_runs_through_the_run_controller(
    operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore,
    sim_server: Callable[..., tuple[int, subprocess.Popen[str]]],
) -> None:  # fmt: skip
    port, _ = sim_server()
    bridge = make_bridge(it_workdir, mongo, mode="tcp", tcp_port=port)
    events = Recorder(operator, "ph2acf/event")
    statuses = Recorder(operator, "ph2acf/status")
    start(operator, calibration="threqu")
    stopped = events.wait("run_stop")
    assert stopped["outcome"] == "done"
    assert bridge.wait_idle(RUN_TIMEOUT)
    assert any(s["mode"] == "tcp" and s["state"] == "RUNNING" for s in statuses.docs())
    doc = mongo._db()["runs"].find_one({"uid": stopped["uid"]})
    assert doc["mode"] == "tcp" and doc["summary"]["totals"]["chips"] == 2
    assert doc["result_file"]["path"].endswith(f"Results/Run_{stopped['run']}/Results.root")
    start(operator, calibration="pixelalive")
    second = events.wait("run_start", count=2)
    assert second["run"] == stopped["run"] + 1
    operator.command("ph2acf", "abort")
    assert bridge.wait_idle(RUN_TIMEOUT)
    assert events.docs("run_stop")[-1]["outcome"] == "aborted"


def test_tcp_mode_server_crash_is_a_failure(
    operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore,
    sim_server: Callable[..., tuple[int, subprocess.Popen[str]]],
) -> None:  # fmt: skip
    port, proc = sim_server(PH2ACF_SIM_CRASH_AT="40")
    bridge = make_bridge(it_workdir, mongo, mode="tcp", tcp_port=port)
    events = Recorder(operator, "ph2acf/event")
    start(operator)
    stopped = events.wait("run_stop")
    assert stopped["outcome"] == "failed"
    error = events.wait("error")["error"]
    assert "closed the connection" in error or "lost" in error, error
    assert proc.wait(5) == -6  # the server died by abort()
    assert bridge.wait_idle(RUN_TIMEOUT)
    assert operator.wait_for("ph2acf/status", lambda m: m.json()["state"] == "ERROR", timeout=5)


def test_a_tripped_interlock_refuses_new_runs(
    broker: LocalBroker, operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore
) -> None:
    bridge = make_bridge(it_workdir, mongo)
    with DcsClient(broker.settings("nodered")) as nodered:
        tripped = {"state": "TRIPPED", "active": ["humidity"], "ts": time.time()}
        nodered.client.publish("interlock/status", json.dumps(tripped), qos=1, retain=True).wait_for_publish(5)
        try:
            deadline = time.monotonic() + 5
            while bridge.conditions.interlock_state() != "TRIPPED":
                assert time.monotonic() < deadline
                time.sleep(0.02)
            with pytest.raises(CommandFailed, match="interlock is TRIPPED"):
                start(operator)
        finally:
            ok = {"state": "OK", "active": [], "ts": time.time()}
            nodered.client.publish("interlock/status", json.dumps(ok), qos=1, retain=True).wait_for_publish(5)
    assert bridge.status()["state"] == "IDLE"


def test_outer_tracker_run_calibration_is_summarised_per_cbc(
    operator: DcsClient, make_bridge: Callable[..., Bridge], ot_workdir: Path, mongo: MongoStore
) -> None:
    bridge = make_bridge(ot_workdir, mongo, flavour="ot")
    events = Recorder(operator, "ph2acf/event")
    start(operator, calibration="pedenoise", modules=["2S_18_5_001"])
    stopped = events.wait("run_stop")
    assert stopped["outcome"] == "done"
    assert bridge.wait_idle(RUN_TIMEOUT)
    doc = mongo._db()["runs"].find_one({"uid": stopped["uid"]})
    assert doc["result_file"]["path"].endswith(f"Results/Run_{stopped['run']}/Results.root")
    assert doc["summary"]["totals"]["chips"] == 16 and doc["summary"]["totals"]["channels"] == 16 * 254
    assert all(c["noisy"] == 1 and c["dead"] == 1 for c in doc["summary"]["chips"])


def test_a_run_longer_than_max_run_s_is_aborted_and_recorded_as_failed(
    operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore
) -> None:
    bridge = make_bridge(it_workdir, mongo, env={"PH2ACF_SIM_DURATION": "60", "PH2ACF_SIM_STEPS": "600"}, max_run_s=1.5)
    events = Recorder(operator, "ph2acf/event")
    start(operator)
    stopped = events.wait("run_stop")
    assert stopped["outcome"] == "failed"
    assert "max_run_s" in events.wait("error")["error"]
    assert bridge.wait_idle(RUN_TIMEOUT)
    assert bridge.status()["state"] == "ERROR"


def test_bridge_shutdown_during_a_run_aborts_and_still_stores_it(
    operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path
) -> None:
    bridge = make_bridge(it_workdir, None, env={"PH2ACF_SIM_DURATION": "60", "PH2ACF_SIM_STEPS": "600"})
    events = Recorder(operator, "ph2acf/event")
    start(operator)
    events.wait("run_start")
    operator.wait_for("ph2acf/status", lambda m: m.json()["progress"] > 0, timeout=10)
    bridge.stop(timeout=15)
    (doc,) = bridge.store.archive.documents()
    assert doc["outcome"] == "aborted" and doc["abort_reason"] == "bridge shutdown"
    assert events.wait("run_stop")["outcome"] == "aborted"
    assert operator.wait_for("ph2acf/availability", lambda m: m.payload == b"offline", timeout=5)


def _gateway_influx_class() -> Any:
    """The gateway tests' real-influxd helper (tests/gateway/conftest.py), loaded by path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gateway_influx", Path(__file__).parents[1] / "gateway" / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Influx


@pytest.mark.slow
def test_a_run_stores_the_time_series_of_its_window_with_its_result(
    operator: DcsClient,
    make_bridge: Callable[..., Bridge],
    it_workdir: Path,
    mongo: MongoStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io
    import shutil

    import pyarrow.parquet as pq

    from trackerdcs.influxql import InfluxClient

    if not shutil.which("influxd"):
        pytest.skip("influxd not installed")
    influx = _gateway_influx_class()(tmp_path / "influx")
    (tmp_path / "influx").mkdir()
    influx.start()
    try:
        client = InfluxClient(url=influx.url, db="trackerdcs")
        client.query('CREATE DATABASE "trackerdcs"', write=True)
        now = int(time.time() * 1000)
        client.write([f'caen_module,module=M1 lv_vmon={11 + i * 0.01},state="HV_ON" {now - 60_000 + i * 1000}'
                      for i in range(60)] + [f"caen_module,module=M2 lv_vmon=5.0 {now - 1000}",
                                             f"julabo bath_temp=-29.8 {now - 1000}"])  # fmt: skip
        monkeypatch.setenv("INFLUX_URL", influx.url)
        monkeypatch.setenv("INFLUX_DB", "trackerdcs")
        monkeypatch.setenv("INFLUX_CONDITIONS_SETTLE_S", "0")
        bridge = make_bridge(it_workdir, mongo)
        start(operator)  # modules M1
        assert bridge.wait_idle(RUN_TIMEOUT)
        doc = mongo._db()["runs"].find_one({"run": 0})
        meta = doc["conditions_file"]
        assert "error" not in meta and meta["rows"] > 0 and meta["modules"] == ["M1"]
        data = mongo.read_file(meta["gridfs_id"])
        assert data == (bridge.settings.archive_dir / doc["uid"] / "conditions.parquet").read_bytes()
        rows = pq.read_table(io.BytesIO(data)).to_pylist()
        assert {r["tags"] for r in rows if r["measurement"] == "caen_module"} == {"module=M1"}  # its module only
        assert any(r["measurement"] == "julabo" for r in rows)
        assert all(meta["from_ts"] * 1000 <= r["time"].timestamp() * 1000 <= meta["to_ts"] * 1000 for r in rows)
    finally:
        influx.stop()


def test_a_run_is_stored_even_when_influxdb_cannot_give_its_conditions(
    operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("INFLUX_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("INFLUX_CONDITIONS_SETTLE_S", "0")
    bridge = make_bridge(it_workdir, mongo)
    start(operator)
    assert bridge.wait_idle(RUN_TIMEOUT)
    doc = mongo._db()["runs"].find_one({"run": 0})
    assert doc["outcome"] == "done" and "unreachable" in doc["conditions_file"]["error"]
    assert not (bridge.settings.archive_dir / doc["uid"] / "conditions.parquet").exists()
