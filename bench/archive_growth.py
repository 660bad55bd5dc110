"""How fast the time series archive grows: bytes per day in InfluxDB, raw and per tier, on the real influxd.

A short window of Telegraf-shaped points (the measurements, tags and fields telegraf.conf writes) is written into
a fresh InfluxDB with timestamps spread over ``--hours`` of simulated time, the tiers' continuous queries are run
over it (their own SELECT, as tests/gateway/test_influx_tiers.py does), InfluxDB is left to compact its TSM files
(cold-write thresholds lowered to seconds), and the bytes on disk of each retention policy are divided by the
simulated time. Extrapolation to a day is linear; TSM compresses longer series better (blocks of up to 1,000
points), so a short window slightly OVERestimates raw and per-minute growth and clearly overestimates the hourly
tier (a few points per series per file).

Two publication regimes bracket reality (the shipped deadbands and heartbeats, deploy/config/):

* ``quiet``: nothing moves beyond its deadband (vmon 0.05 V, imon 0.5 nA ...); every status goes out on its 30 s
  heartbeat; health every 10 s; environment sensors every 10 s.
* ``busy``: every CAEN readback crosses its deadband at every 1 s monitor update, the chiller's bath temperature
  at every 1 s poll (worst case: noisy readbacks, ramps). A real stand sits between, mostly near ``quiet``.

Stands: ``10 modules`` (20 CAEN channels: one LV and one HV each) and ``1,000 channels`` (500 modules).

    .venv/bin/python bench/archive_growth.py [--hours 6] [--busy-minutes 10]

Writes bench/results/archive_growth.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trackerdcs.influxql import InfluxClient  # noqa: E402
from trackerdcs.influxtiers import continuous_queries, provision  # noqa: E402
from trackerdcs_devstack.localbroker import free_port, wait_port  # noqa: E402

DB = "trackerdcs"


def start_influx(work: Path) -> tuple[subprocess.Popen, InfluxClient]:
    port, rpc = free_port(), free_port()
    conf = work / "influxdb.conf"
    conf.write_text(
        f"""reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{work}/meta"
[data]
  dir = "{work}/data"
  wal-dir = "{work}/wal"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "1s"
  compact-full-write-cold-duration = "2s"
[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
  max-body-size = 0
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"""
    )
    proc = subprocess.Popen(
        [shutil.which("influxd") or "/usr/bin/influxd", "-config", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_port("127.0.0.1", port, 20)
    client = InfluxClient(url=f"http://127.0.0.1:{port}", db=DB, timeout=600)
    for _ in range(100):
        if client.ping():
            break
        time.sleep(0.1)
    return proc, client


def series_lines(modules: int, t0_ms: int, span_s: int, busy: bool, rng: random.Random):
    """Yield batches of line protocol for the stand over ``span_s`` seconds from ``t0_ms``."""
    caen_period = 1 if busy else 30
    julabo_period = 1 if busy else 30
    batch: list[str] = []
    for second in range(span_s):
        t = t0_ms + second * 1000
        if second % caen_period == 0:
            for m in range(modules):
                jitter = rng.randrange(0, 1000)
                lv_v = 10.5 + rng.gauss(0, 0.2 if busy else 0.01)
                lv_i = 2.1 + rng.gauss(0, 0.05 if busy else 0.0002)
                hv_v = 300 + rng.gauss(0, 0.5 if busy else 0.01)
                hv_i = 1.5 + rng.gauss(0, 0.1 if busy else 0.0001)
                batch.append(
                    f"caen_module,hv_channel=hv_{m},lv_channel=lv_{m},module=module_{m} "
                    f'state="HV_ON",lv_vmon={lv_v:.4f},lv_imon={lv_i:.5f},hv_vmon={hv_v:.3f},hv_imon={hv_i:.5f} '
                    f"{t + jitter}"
                )
                for kind, ch, slot, v, i, v0 in (
                    ("lv", f"lv_{m}", 0, lv_v, lv_i, 10.5),
                    ("hv", f"hv_{m}", 50, hv_v, hv_i, 300.0),
                ):
                    batch.append(
                        f"caen_channel,channel={ch},kind={kind},module=module_{m} "
                        f'state="ON",on=true,vmon={v:.4f},imon={i:.5f},v0set={v0},i0set=3.0,status=1i,'
                        f"slot={slot}i,ch={m % 48}i {t + jitter + 1}"
                    )
            if second % 30 == 0:
                batch.append(
                    f'caen_system state="RUNNING",connected=true,modules_total={modules}i,'
                    f"modules_hv_on={modules}i,modules_tripped=0i {t}"
                )
        if second % julabo_period == 0:
            bath = -20 + rng.gauss(0, 0.05 if busy else 0.01)
            batch.append(
                f'julabo state="RUNNING",connected=true,bath_temp={bath:.2f},external_temp={bath + 1:.2f},'
                f"heating_power={rng.uniform(0, 100):.1f},setpoint=-20.0,setpoint_1=-20.0,setpoint_2=15.0,"
                f'setpoint_3=20.0,active_setpoint=1i,control_sensor="internal",pump_stage=3i,status_code=3i,'
                f'status_text="03 REMOTE START",remote=true {t + 300}'
            )
        if second % 10 == 0:
            for sensor in ("box", "room"):
                batch.append(
                    f"environment,sensor={sensor} temperature={21 + rng.gauss(0, 0.1):.2f},"
                    f"humidity={3 + rng.gauss(0, 0.2):.2f} {t + 500}"
                )
            for svc in ("caen", "julabo", "ph2acf"):
                batch.append(
                    f"dcs_health,service={svc} uptime_s={second}.0,cpu_percent={rng.uniform(0, 10):.1f},"
                    f"rss_mb={rng.uniform(60, 80):.1f},mqtt_reconnects=0i,commands_ok=12i,commands_failed=0i,"
                    f"msgs_in_per_s={rng.uniform(0, 50):.1f},msgs_out_per_s={rng.uniform(0, 50):.1f} {t + 600}"
                )
        if second % 30 == 0:
            batch.append(f'interlock state="OK",active_count=0i,conditions_count=6i {t + 700}')
            batch.append(
                f'ph2acf state="IDLE",run=12i,calibration="pixelalive",progress=0.0,operator="op",'
                f'mode="tcp",spooled=0i,mongo_ok=true {t + 800}'
            )
        if len(batch) >= 20_000:
            yield batch
            batch = []
    if batch:
        yield batch


def rp_bytes(work: Path) -> dict[str, int]:
    out = {}
    for rp in ("autogen", "minute", "hour"):
        folder = work / "data" / DB / rp
        out[rp] = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0
    return out


def run_cqs(client: InfluxClient, t0_ms: int, t1_ms: int) -> None:
    """Minute CQs hour by hour (as the CQ service would, in small steps), then the hour CQs."""
    hour = 3_600_000
    for name in ("minute", "hour"):
        for cq in continuous_queries(DB):
            if not cq.name.startswith(f"cq_{name}_"):
                continue
            select = re.search(r"BEGIN (.*) END$", cq.statement).group(1)
            head, group = select.split(" GROUP BY ")
            for a in range(t0_ms, t1_ms, hour):
                client.query(f"{head} WHERE time >= {a}ms AND time < {a + hour}ms GROUP BY {group}", write=True)


def measure(modules: int, span_s: int, busy: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="archive-growth-"))
    proc, client = start_influx(work)
    try:
        provision(client)
        rng = random.Random(14)
        hour = 3_600_000
        t0 = (int(time.time() * 1000) - 3 * 86_400_000) // hour * hour
        t_write = time.monotonic()
        lines = 0
        for batch in series_lines(modules, t0, span_s, busy, rng):
            client.write(batch)
            lines += len(batch)
        write_s = time.monotonic() - t_write
        print(f"  {lines} lines written in {write_s:.1f} s; running the CQs", file=sys.stderr, flush=True)
        t_cq = time.monotonic()
        run_cqs(client, t0, t0 + span_s * 1000 + hour)
        cq_s = time.monotonic() - t_cq
        print(f"  CQs {cq_s:.1f} s; waiting for compaction", file=sys.stderr, flush=True)
        # wait until the WAL is snapshotted and the TSM files compacted (sizes stable)
        last, stable = None, 0
        for _ in range(120):
            time.sleep(1)
            now = rp_bytes(work)
            wal = sum(p.stat().st_size for p in (work / "wal").rglob("*.wal"))
            stable = stable + 1 if now == last and wal < 1024 else 0
            if stable >= 5:
                break
            last = now
        sizes = rp_bytes(work)
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    per_day = {rp: round(b * 86_400 / span_s) for rp, b in sizes.items()}
    return {
        "modules": modules,
        "channels": 2 * modules,
        "regime": "busy" if busy else "quiet",
        "simulated_s": span_s,
        "lines": lines,
        "bytes": sizes,
        "bytes_per_day": per_day,
        "bytes_per_line_raw": round(sizes["autogen"] / lines, 2),
        "write_s": round(write_s, 1),
        "cq_s": round(cq_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=6.0, help="simulated time of the quiet runs")
    parser.add_argument("--busy-minutes", type=float, default=10.0, help="simulated time of the busy runs")
    parser.add_argument("--modules", type=int, nargs="+", default=[10, 500], help="stands (500 = 1,000 channels)")
    parser.add_argument("--regimes", nargs="+", default=["quiet", "busy"], choices=["quiet", "busy"])
    ns = parser.parse_args()
    path = REPO / "bench" / "results" / "archive_growth.json"
    out = json.loads(path.read_text()) if path.exists() else {"results": []}
    for modules in ns.modules:
        for regime in ns.regimes:
            span = int(ns.hours * 3600) if regime == "quiet" else int(ns.busy_minutes * 60)
            load = os.getloadavg()[0]
            r = {**measure(modules, span, regime == "busy"), "load_avg_1min_at_start": round(load, 1)}
            r["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            print(json.dumps(r), flush=True)
            out["results"] = [x for x in out["results"] if (x["modules"], x["regime"]) != (modules, regime)] + [r]
            out["machine"] = f"{os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}"
            out["influxd"] = subprocess.run(["influxd", "version"], capture_output=True, text=True).stdout.strip()
            path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
