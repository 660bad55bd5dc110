"""``dcs export`` of 1,000 channels: time and peak memory, on the real influxd.

1,000 CAEN channels (500 modules; every field telegraf.conf writes for ``caen_channel``) are written at the quiet
regime (each on its 30 s heartbeat, bench/archive_growth.py) for ``--hours`` of simulated time; then ``dcs export``
runs as its own process for 1 h and for the whole span, to Parquet and to CSV, and reports its wall time and its
peak RSS (``ru_maxrss``). A full day is not written here (it takes minutes on a loaded two-core machine): the day
figure is the measured rate times a day's rows, and the memory figure is the measured peak, which does not grow
with the range (the export streams window by window).

    .venv/bin/python bench/export_day.py [--hours 3]   -> bench/results/export_day.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from archive_growth import start_influx  # noqa: E402

from trackerdcs.influxtiers import provision  # noqa: E402

CHANNELS = 1000
CHILD = """
import resource, sys, time
from trackerdcs import export
t0 = time.perf_counter()
rc = export.main(sys.argv[1:])
u = resource.getrusage(resource.RUSAGE_SELF)
print(time.perf_counter() - t0, u.ru_maxrss, rc, u.ru_utime + u.ru_stime)
"""


def write_channels(client, t0_ms: int, hours: float) -> int:
    lines, n = [], 0
    for s in range(0, int(hours * 3600), 30):
        t = t0_ms + s * 1000
        for c in range(CHANNELS):
            m, kind = c // 2, ("lv" if c % 2 == 0 else "hv")
            v = 10.5 if kind == "lv" else 300.0
            lines.append(
                f"caen_channel,channel={kind}_{m},kind={kind},module=module_{m} "
                f'state="ON",on=true,vmon={v + (c % 7) * 0.001 + (s % 11) * 0.0001:.4f},imon={1 + (s % 13) * 1e-4:.5f},'
                f"v0set={v},i0set=3.0,status=1i,slot={0 if kind == 'lv' else 50}i,ch={m % 48}i {t + c}"
            )
        if len(lines) >= 20_000:
            client.write(lines)
            n += len(lines)
            lines = []
    if lines:
        client.write(lines)
        n += len(lines)
    return n


def export_once(url: str, start_ms: int, stop_ms: int, out: Path) -> dict:
    iso = lambda ms: dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()  # noqa: E731
    argv = ["--from", iso(start_ms), "--to", iso(stop_ms), "--measurements", "caen_channel", "-o", str(out), "--quiet"]
    env = {**os.environ, "INFLUX_URL": url, "INFLUX_DB": "trackerdcs"}
    r = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, env=env, check=True)
    seconds, rss_kb, rc, cpu = r.stdout.split()
    rows = int(r.stderr.split(" rows")[0].split()[-1].replace(",", ""))
    return {
        "range_h": round((stop_ms - start_ms) / 3_600_000, 2),
        "format": out.suffix[1:],
        "rows": rows,
        "seconds": round(float(seconds), 2),
        "rows_per_s": round(rows / float(seconds)),
        "cpu_s": round(float(cpu), 2),
        "rows_per_cpu_s": round(rows / float(cpu)),
        "peak_rss_mb": round(int(rss_kb) / 1024, 1),
        "file_bytes": out.stat().st_size,
        "exit": int(rc),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=3.0)
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="export-day-"))
    proc, client = start_influx(work)
    try:
        provision(client)
        hour = 3_600_000
        t0 = (int(time.time() * 1000) - 86_400_000) // hour * hour
        load = os.getloadavg()[0]
        tw = time.monotonic()
        lines = write_channels(client, t0, ns.hours)
        print(f"{lines} lines written in {time.monotonic() - tw:.0f} s", file=sys.stderr)
        runs = []
        span = int(ns.hours * hour)
        for stop, suffix in ((t0 + hour, "parquet"), (t0 + hour, "csv"), (t0 + span, "parquet")):
            r = export_once(client.url, t0, stop, work / f"out.{suffix}")
            print(json.dumps(r), file=sys.stderr)
            runs.append(r)
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    full = runs[-1]
    day_rows = full["rows"] * 24 / full["range_h"]
    out = {
        "machine": f"{os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_avg_1min_at_start": round(load, 1),
        "channels": CHANNELS,
        "regime": "quiet (30 s heartbeat per channel)",
        "lines_written": lines,
        "exports": runs,
        "one_day_rows": round(day_rows),
        "one_day_parquet_seconds_extrapolated": round(day_rows / full["rows_per_s"]),
        "one_day_parquet_cpu_seconds_extrapolated": round(day_rows / full["rows_per_cpu_s"]),
        "one_day_parquet_bytes_extrapolated": round(full["file_bytes"] * 24 / full["range_h"]),
        "peak_rss_mb_any_range": max(r["peak_rss_mb"] for r in runs),
    }
    print(json.dumps(out, indent=1))
    (REPO / "bench" / "results" / "export_day.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
