"""Benchmark of the ph2acf bridge's data path: framing, TCP round trips to the RunController simulator,
ROOT result writing (simulator) and reading + summarising (bridge), and storing a run (archive + GridFS).

Run: .venv/bin/python bench/ph2acf_pipeline.py   -> prints figures, writes bench/results/ph2acf_pipeline.json
MongoDB: the real server when MONGODB_URI is set, else the mongomock stand-in (named in the output).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ph2acf_bridge.framing import Decoder, encode
from ph2acf_bridge.store import MongoStore, RunStore
from ph2acf_bridge.summary import summarise
from ph2acf_sim.detector import example_xml, parse_chips
from ph2acf_sim.histograms import write_results

from trackerdcs_devstack.localbroker import free_port, wait_port

OUT = Path(__file__).parent / "results" / "ph2acf_pipeline.json"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_framing(n: int = 200_000) -> dict[str, float]:
    stream = b"".join(encode("Status?", "len8", i) for i in range(n))
    decoder = Decoder("len8")
    t0 = time.perf_counter()
    count = 0
    for i in range(0, len(stream), 4096):
        count += len(decoder.feed(stream[i : i + 4096]))
    dt = time.perf_counter() - t0
    assert count == n
    return {"packets": n, "decode_packets_per_s": n / dt}


def bench_tcp(workdir: Path, n: int = 2000) -> dict[str, float]:
    """Status? round trips to a ph2acf-sim process (separate process, like the real RunController)."""
    port = free_port()
    exe = Path(sys.executable).parent / "ph2acf-sim"
    proc = subprocess.Popen([str(exe), "--port", str(port), "--workdir", str(workdir)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    wait_port("127.0.0.1", port, 15)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    decoder = Decoder("len4")
    rtts = []
    for _ in range(n):
        t0 = time.perf_counter()
        sock.sendall(encode("Status?"))
        while not decoder.feed(sock.recv(4096)):
            pass
        rtts.append((time.perf_counter() - t0) * 1e3)
    sock.close()
    proc.terminate()
    proc.wait(10)
    return {"requests": n, "rtt_p50_ms": statistics.median(rtts), "rtt_p99_ms": pct(rtts, 0.99)}


def bench_results(tmp: Path, chips: int = 4, repeat: int = 3) -> dict[str, float]:
    ids = parse_chips(example_xml("it", chips=chips))
    write_s, read_s = [], []
    path = tmp / "Run000001_SCurve.root"
    summary = None
    for r in range(repeat):
        t0 = time.perf_counter()
        write_results(path, "it", "scurve", r, ids)
        write_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        summary = summarise(path)
        read_s.append(time.perf_counter() - t0)
    assert summary is not None
    return {
        "chips": chips,
        "pixels_per_chip": 336 * 432,
        "root_file_mb": path.stat().st_size / 1e6,
        "sim_write_s_median": statistics.median(write_s),
        "bridge_summarise_s_median": statistics.median(read_s),
    }


def bench_store(tmp: Path, repeat: int = 3) -> dict[str, float | str]:
    uri = os.environ.get("MONGODB_URI")
    mongo = MongoStore.from_uri(uri or "mongomock://", "ph2acf_bench")
    ids = parse_chips(example_xml("it", chips=4))
    path = tmp / "Run000002_SCurve.root"
    write_results(path, "it", "scurve", 2, ids)
    summary = summarise(path)
    times = []
    for r in range(repeat):
        store = RunStore(tmp / f"archive{r}", tmp / f"spool{r}", mongo)
        doc = {"uid": f"bench-{r}-{time.time()}", "run": r, "start_ts": time.time(), "summary": summary.document()}
        t0 = time.perf_counter()
        where = store.save(doc, path, summary.channels)
        times.append(time.perf_counter() - t0)
        assert where == "mongo"
    if uri:
        mongo.client_factory().drop_database("ph2acf_bench")
    return {"mongodb": "real (MONGODB_URI)" if uri else "mongomock stand-in", "save_s_median": statistics.median(times)}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "CMSIT.xml").write_text(example_xml("it"))
        results = {
            "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d"),
            "framing": bench_framing(),
            "tcp_status_roundtrip": bench_tcp(tmp),
            "results_4_croc_chips": bench_results(tmp),
            "store_run": bench_store(tmp),
        }
    print(json.dumps(results, indent=2))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
