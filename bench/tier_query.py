"""A one-year Grafana panel on the hourly tier vs the same range on raw points, on the real influxd.

One module's ``lv_vmon`` for a year: raw at its 30 s heartbeat (1,051,200 points; in a retention policy of its
own kept forever, since the real raw tier keeps only 30 days: this is what a year panel would scan without tiers)
and the hourly tier (8,760 points with ``lv_vmon``, ``lv_vmon_min``, ``lv_vmon_max``, the shape the CQs write;
written directly here, running the CQs over a year of raw would take too long for a benchmark run). The panel
query is the dashboards' (``SELECT mean("lv_vmon") ... GROUP BY time($__interval), "module"``, interval 12 h for a
year), run ``--repeat`` times on each; the figure is the ratio of the medians. Per series, so it scales with the
number of series a panel shows.

    .venv/bin/python bench/tier_query.py   -> bench/results/tier_query.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from archive_growth import start_influx  # noqa: E402

from trackerdcs.influxtiers import provision  # noqa: E402

YEAR_S = 365 * 86_400


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--step-s", type=int, default=30, help="raw point spacing (heartbeat)")
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tier-query-"))
    proc, client = start_influx(work)
    try:
        provision(client)
        client.query('CREATE RETENTION POLICY "rawyear" ON "trackerdcs" DURATION INF REPLICATION 1', write=True)
        now = int(time.time()) // 3600 * 3600
        start = now - YEAR_S
        load = os.getloadavg()[0]
        tw = time.monotonic()
        batch = []
        raw_points = 0
        for t in range(start, now, ns.step_s):
            batch.append(f"caen_module,module=module_0 lv_vmon={10.5 + (t % 997) * 1e-4:.4f} {t}")
            if len(batch) >= 50_000:
                client.write(batch, rp="rawyear", precision="s")
                raw_points += len(batch)
                batch = []
        client.write(batch, rp="rawyear", precision="s")
        raw_points += len(batch)
        hours = [
            f"caen_module,module=module_0 lv_vmon=10.55,lv_vmon_min=10.5,lv_vmon_max=10.6 {t}"
            for t in range(start, now, 3600)
        ]
        client.write(hours, rp="hour", precision="s")
        print(f"{raw_points} raw points written in {time.monotonic() - tw:.0f} s", file=sys.stderr)
        time.sleep(5)
        timings: dict[str, list[float]] = {}
        for rp in ("hour", "rawyear", "hour", "rawyear"):  # interleaved, each rp twice, to share the load
            q = (
                f'SELECT mean("lv_vmon") FROM "{rp}"."caen_module" WHERE time > now() - 365d '
                'GROUP BY time(12h), "module" fill(none)'
            )
            for _ in range(ns.repeat):
                t0 = time.perf_counter()
                result = client.query(q)
                timings.setdefault(rp, []).append(time.perf_counter() - t0)
                assert len(result[0]["series"][0]["values"]) >= 700
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    med = {rp: statistics.median(v) for rp, v in timings.items()}
    out = {
        "machine": f"{os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_avg_1min_at_start": round(load, 1),
        "series": 1,
        "raw_points_scanned": raw_points,
        "hour_points_scanned": len(hours),
        "raw_median_s": round(med["rawyear"], 4),
        "hour_median_s": round(med["hour"], 4),
        "raw_over_hour": round(med["rawyear"] / med["hour"], 1),
        "runs_each": len(timings["hour"]),
    }
    print(json.dumps(out, indent=1))
    (REPO / "bench" / "results" / "tier_query.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
