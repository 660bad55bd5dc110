"""The bridge against Ph2_ACF as the public sources show it (issue 16), through both simulator personalities:
the 2019-2022 string-protocol release (4-byte framing for 2019-2020 builds, 8-byte for 2021-2022) and the
current protobuf release. Each test names the defect it guards against."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from ph2acf_bridge.app import Bridge
from ph2acf_bridge.settings import load_settings
from ph2acf_bridge.store import MongoStore
from ph2acf_bridge.summary import summarise
from ph2acf_sim.detector import load_chips
from ph2acf_sim.histograms import write_results

from trackerdcs.client import CommandFailed, DcsClient
from trackerdcs.config import ConfigError

from .test_bridge import RUN_TIMEOUT, Recorder, start

SimServer = Callable[..., tuple[int, subprocess.Popen[str]]]
#: (bridge tcp.release, simulator framing) for the two string-protocol wire formats
STRING_SERVERS = [("2019-2020", "len4"), ("2021-2022", "len8")]
RELEASES = ["2019-2022", "current"]


def server_log(workdir: Path, port: int) -> str:
    """What the simulated server logged about the commands it received."""
    return (workdir.parent / f"ph2acf-sim-{port}.log").read_text()


def server_answers(port: int, framing: str) -> bool:
    """The Ph2_ACF server still lives: it answers Initialize (harmless on every release)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
            if framing == "len4":
                sock.sendall(b"\x00\x00\x00\x0eInitialize")
            else:
                sock.sendall(b"\x00\x00\x00\x12\x00\x00\x00\x00Initialize")
            return sock.recv(100).endswith(b"InitializeDone")
    except OSError:
        return False


@pytest.mark.parametrize(("release", "framing"), STRING_SERVERS)
def test_tcp_runs_leave_the_string_server_alive(
    operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore,
    sim_server: SimServer, release: str, framing: str,
) -> None:  # fmt: skip
    """Items 1-3: no 'Progress?', the framing of the release, 'clockdelay' on the wire."""
    port, proc = sim_server(framing=framing)
    bridge = make_bridge(it_workdir, mongo, mode="tcp", tcp_port=port, release=release)
    events = Recorder(operator, "ph2acf/event")
    for n, calibration in enumerate(["pixelalive", "clkdelay"], start=1):
        start(operator, calibration=calibration)
        stopped = events.wait("run_stop", count=n)
        assert bridge.wait_idle(RUN_TIMEOUT)
        assert stopped["outcome"] == "done", events.docs("error")
    assert proc.poll() is None and server_answers(port, framing)
    doc = bridge.store.show(stopped["run"])
    assert doc is not None and doc["result_file"]["path"].endswith(f"Results/Run_{stopped['run']}/Results.root")
    assert doc["summary"]["totals"]["chips"] == 2


def test_tcp_needs_the_release_and_refuses_what_the_server_does_not_know(tmp_path: Path) -> None:
    """Items 2-3: no guessed framing, no calibration a server would die of."""
    base = {"mode": "tcp", "workdir": str(tmp_path)}
    with pytest.raises(ConfigError, match="release"):
        load_settings({"ph2acf": base})
    with pytest.raises(ConfigError, match="no longer accepted"):
        load_settings({"ph2acf": {**base, "tcp": {"release": "2021-2022", "header": "len4"}}})
    with pytest.raises(ConfigError, match="no longer accepted"):
        load_settings({"ph2acf": {**base, "tcp": {"release": "2021-2022", "progress_query": True}}})
    with pytest.raises(ConfigError, match="noiseOT"):
        tcp21 = {"release": "2021-2022"}
        load_settings({"ph2acf": {**base, "flavour": "ot", "calibrations": ["noiseOT"], "tcp": tcp21}})
    with pytest.raises(ConfigError, match="thradj"):
        load_settings({"ph2acf": {**base, "calibrations": ["thradj"], "tcp": {"release": "2019-2020"}}})
    with pytest.raises(ConfigError, match="protobuf"):
        load_settings({"ph2acf": {**base, "tcp": {"release": "current"}}})
    ot = load_settings({"ph2acf": {**base, "flavour": "ot", "tcp": {"release": "2021-2022"}}})
    assert sorted(ot.calibrations) == ["calibration", "calibrationandpedenoise", "pedenoise"]
    assert ot.tcp.framing == "len8"


def test_tcp_abort_lets_the_scan_finish_and_keeps_results_and_run_numbers(
    operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore,
    sim_server: SimServer,
) -> None:  # fmt: skip
    """Item 4: no Stop/Halt in the middle of a scan; the server survives, results and numbers stay intact."""
    port, proc = sim_server(PH2ACF_SIM_DURATION="3")
    bridge = make_bridge(it_workdir, mongo, mode="tcp", tcp_port=port)
    events = Recorder(operator, "ph2acf/event")
    start(operator, calibration="scurve")
    first = events.wait("run_start")
    time.sleep(0.5)
    operator.command("ph2acf", "abort")
    stopped = events.wait("run_stop")
    assert stopped["outcome"] == "aborted"
    assert bridge.wait_idle(RUN_TIMEOUT)
    assert proc.poll() is None and server_answers(port, "len8")
    commands = server_log(it_workdir, port)
    assert "b'Status?' -> b'Running' (during a scan)" in commands
    assert "b'Stop' -> b'StopDone'\n" in commands and "b'Stop' -> b'StopDone' (during a scan)" not in commands
    doc = bridge.store.show(first["run"])
    assert doc is not None and doc["summary"]["totals"]["chips"] == 2 and doc["error"] is None
    start(operator, calibration="pixelalive")
    assert events.wait("run_stop", count=2)["run"] == first["run"] + 1


def test_tcp_abort_gives_up_after_abort_wait_s_and_says_the_scan_still_runs(
    operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore,
    sim_server: SimServer,
) -> None:  # fmt: skip
    port, proc = sim_server(PH2ACF_SIM_DURATION="30")
    bridge = make_bridge(it_workdir, mongo, mode="tcp", tcp_port=port,
                         tcp={"port": port, "release": "2021-2022", "poll_s": 0.1, "abort_wait_s": 1})  # fmt: skip
    events = Recorder(operator, "ph2acf/event")
    start(operator)
    events.wait("run_start")
    operator.command("ph2acf", "abort")
    assert events.wait("run_stop")["outcome"] == "failed"
    assert "STILL RUNNING" in events.wait("error")["error"]
    assert proc.poll() is None
    assert bridge.wait_idle(RUN_TIMEOUT)
    # nothing more is sent to that server until an operator says the scan was stopped there
    with pytest.raises(CommandFailed, match="left running on the Ph2_ACF server"):
        start(operator)
    assert operator.command("ph2acf", "status")["result"]["server_blocked"]["run"] == 0
    operator.command("ph2acf", "server_stopped", {"operator": "alice"})
    assert events.wait("server_stopped")["operator"] == "alice"
    with pytest.raises(CommandFailed, match="no scan is recorded"):
        operator.command("ph2acf", "server_stopped", {"operator": "alice"})


def test_a_protobuf_server_is_recognised_at_once_and_left_alive(
    operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore,
    sim_server: SimServer,
) -> None:  # fmt: skip
    """Item 9: say so clearly, never hang, send nothing after the harmless Initialize."""
    port, proc = sim_server(release="current")
    bridge = make_bridge(it_workdir, mongo, mode="tcp", tcp_port=port)
    events = Recorder(operator, "ph2acf/event")
    began = time.monotonic()
    start(operator)
    error = events.wait("error", timeout=10)["error"]
    assert "protobuf" in error and "subprocess" in error
    assert time.monotonic() - began < 5
    assert bridge.wait_idle(RUN_TIMEOUT)
    assert proc.poll() is None and events.docs("run_start") == []


def test_subprocess_mode_needs_ph2acf_base_dir_and_hands_it_to_the_program(
    operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Item 5: CMSITminiDAQ dies without PH2ACF_BASE_DIR; the bridge refuses to start without it, and sets it."""
    monkeypatch.delenv("PH2ACF_BASE_DIR", raising=False)
    with pytest.raises(ConfigError, match="PH2ACF_BASE_DIR"):
        load_settings({"ph2acf": {"workdir": str(it_workdir)}})
    bridge = make_bridge(it_workdir, mongo, base_dir=str(tmp_path / "Ph2_ACF"))
    events = Recorder(operator, "ph2acf/event")
    start(operator)
    assert events.wait("run_stop")["outcome"] == "done", events.docs("error")
    assert bridge.wait_idle(RUN_TIMEOUT)


@pytest.mark.parametrize("release", RELEASES)
def test_progress_is_seen_during_the_run_in_both_formats(
    operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore, release: str
) -> None:  # fmt: skip
    """Item 6: 2019-2022 builds print '>>>> Progress :  42.5% <<<<'."""
    bridge = make_bridge(it_workdir, mongo, env={"PH2ACF_SIM_RELEASE": release, "PH2ACF_SIM_DURATION": "3"})
    statuses = Recorder(operator, "ph2acf/status")
    start(operator)
    assert bridge.wait_idle(RUN_TIMEOUT)
    assert any(s["state"] == "RUNNING" and 0 < s["progress"] < 100 for s in statuses.docs())


@pytest.mark.parametrize("release", RELEASES)
def test_aborted_inner_tracker_run_never_lends_its_number_to_the_next(
    operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore, release: str
) -> None:  # fmt: skip
    """Item 4: SIGINT kills CMSITminiDAQ before it writes RunNumber.txt."""
    (it_workdir / "RunNumber.txt").write_text("20\n")
    bridge = make_bridge(it_workdir, mongo, env={"PH2ACF_SIM_RELEASE": release, "PH2ACF_SIM_DURATION": "30"})
    events = Recorder(operator, "ph2acf/event")
    start(operator)
    assert events.wait("run_start")["run"] == 20
    time.sleep(1.0)
    operator.command("ph2acf", "abort")
    assert events.wait("run_stop")["outcome"] == "aborted"
    assert bridge.wait_idle(RUN_TIMEOUT)
    assert (it_workdir / "RunNumber.txt").read_text().strip() == "21"
    bridge.settings.subprocess.env["PH2ACF_SIM_DURATION"] = "1"
    start(operator)
    assert events.wait("run_stop", count=2)["run"] == 21


@pytest.mark.parametrize("release", RELEASES)
def test_outer_tracker_run_numbers_come_from_run_numbers_dat(
    operator: DcsClient, make_bridge: Callable[..., Bridge], ot_workdir: Path, mongo: MongoStore, release: str
) -> None:  # fmt: skip
    """Item 7: next run = last line of RunNumbers.dat + 1; results in Results/Run_<N>/Results.root."""
    (ot_workdir / "RunNumbers.dat").write_text("5\n8\n")
    (ot_workdir / "RunNumber.txt").write_text("99\n")  # an inner-tracker file that must not be used
    bridge = make_bridge(ot_workdir, mongo, flavour="ot", env={"PH2ACF_SIM_RELEASE": release})
    events = Recorder(operator, "ph2acf/event")
    start(operator, calibration="pedenoise")
    assert events.wait("run_start")["run"] == 9
    stopped = events.wait("run_stop")
    assert stopped["run"] == 9 and stopped["outcome"] == "done"
    assert bridge.wait_idle(RUN_TIMEOUT)


@pytest.mark.parametrize(("calibration", "quantities"), [
    ("pixelalive", {"occupancy"}), ("scurve", {"threshold", "noise"}), ("gain", {"gain", "occupancy"})])  # fmt: skip
def test_summary_reads_the_real_inner_tracker_map_names(tmp_path: Path, it_workdir: Path, calibration: str,
                                                        quantities: set[str]) -> None:  # fmt: skip
    """Item 8: PixelAlive, Threshold2D, Noise2D, Slope2D (no Occ2D / Gain2D in real files)."""
    _, chips = load_chips(it_workdir / "CMSIT.xml")
    path = tmp_path / "Results.root"
    truths = write_results(path, "it", calibration, 3, chips, matrix=(24, 20))
    summary = summarise(path)
    assert {k[5:] for k in summary.chips[0] if k.startswith("mean_")} == quantities
    assert [c["dead"] for c in summary.chips] == [len(t.dead) for t in truths]


def test_bridge_shutdown_during_a_tcp_scan_leaves_the_server_alone_and_says_so(
    operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore,
    sim_server: SimServer,
) -> None:  # fmt: skip
    """Item 4: a shutdown sends neither Stop nor Halt into a running scan; the run is recorded as left running."""
    port, proc = sim_server(PH2ACF_SIM_DURATION="30")
    bridge = make_bridge(it_workdir, None, mode="tcp", tcp_port=port)
    events = Recorder(operator, "ph2acf/event")
    start(operator)
    events.wait("run_start")
    began = time.monotonic()
    bridge.stop(timeout=15)
    assert time.monotonic() - began < 5
    (doc,) = bridge.store.archive.documents()
    assert doc["outcome"] == "failed" and "STILL RUNNING" in doc["error"]
    assert (bridge.settings.state_dir / "tcp_server_busy.json").exists()  # kept for the next bridge process
    assert proc.poll() is None and server_answers(port, "len8")


def test_a_server_that_never_answers_fails_the_run_within_the_timeout(
    operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore
) -> None:
    """Item 9: never hang, whatever sits on the port."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        bridge = make_bridge(it_workdir, mongo, mode="tcp", tcp_port=port,
                             tcp={"port": port, "release": "2021-2022", "timeout_s": 1})  # fmt: skip
        events = Recorder(operator, "ph2acf/event")
        began = time.monotonic()
        start(operator)
        assert "no reply to 'Initialize'" in events.wait("error", timeout=10)["error"]
        assert time.monotonic() - began < 5
        assert bridge.wait_idle(RUN_TIMEOUT)


def test_an_unexpected_answer_to_initialize_stops_the_bridge_before_anything_else_is_sent(
    operator: DcsClient, make_bridge: Callable[..., Bridge], it_workdir: Path, mongo: MongoStore
) -> None:
    """Item 9: whatever answers on the port, only the harmless Initialize is ever sent to it."""
    received: list[bytes] = []

    def answer_empty(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn:
            received.append(conn.recv(100))
            conn.sendall(b"\x00\x00\x00\x08\x00\x00\x00\x00")  # an empty reply packet
            conn.settimeout(2)
            try:
                while data := conn.recv(100):
                    received.append(data)
            except OSError:
                pass

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        thread = threading.Thread(target=answer_empty, args=(listener,), daemon=True)
        thread.start()
        bridge = make_bridge(it_workdir, mongo, mode="tcp", tcp_port=port)
        events = Recorder(operator, "ph2acf/event")
        start(operator)
        error = events.wait("error", timeout=10)["error"]
        thread.join(5)
    assert "answered 'Initialize' with ''" in error and "Nothing else was sent" in error
    assert received == [b"\x00\x00\x00\x12\x00\x00\x00\x00Initialize"]
    assert bridge.wait_idle(RUN_TIMEOUT)


@pytest.mark.parametrize("release", RELEASES)
def test_aborted_outer_tracker_run_keeps_its_results_and_its_number(
    operator: DcsClient, make_bridge: Callable[..., Bridge], ot_workdir: Path, mongo: MongoStore, release: str
) -> None:  # fmt: skip
    """Item 4: runCalibration writes its ROOT file on SIGINT; the next run gets the next number."""
    (ot_workdir / "RunNumbers.dat").write_text("4\n")
    slow = {"PH2ACF_SIM_RELEASE": release, "PH2ACF_SIM_DURATION": "30"}
    bridge = make_bridge(ot_workdir, mongo, flavour="ot", env=slow)
    events = Recorder(operator, "ph2acf/event")
    start(operator, calibration="pedenoise")
    assert events.wait("run_start")["run"] == 5
    time.sleep(1.0)
    operator.command("ph2acf", "abort")
    assert events.wait("run_stop")["outcome"] == "aborted"
    assert bridge.wait_idle(RUN_TIMEOUT)
    doc = bridge.store.show(5)
    assert doc is not None and doc["summary"]["totals"]["chips"] == 16 and doc["exit_code"] == -6
    bridge.settings.subprocess.env["PH2ACF_SIM_DURATION"] = "1"
    start(operator, calibration="pedenoise")
    assert events.wait("run_stop", count=2)["run"] == 6
