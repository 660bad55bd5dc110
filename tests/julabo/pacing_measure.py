"""Measure lost replies against the simulator at several pacings (the figure behind the default ``pacing_s``).

    .venv/bin/python -m tests.julabo.pacing_measure [--queries 300] [--jitter 0.025] [--pacing 0.25 0.26 0.27]

Starts ``julabo-sim`` (XON noise off, first-command loss off, the given jitter), then for each pacing opens
the service's own :class:`~julabo_fsm.link.SerialLink` over TCP and sends the service's poll cycle (STATUS,
IN_PV_00, IN_PV_01, IN_PV_02, IN_SP_00) in a loop. Counts silent and unreadable replies (also hit by this
machine's load: a reply later than 0.5 s counts as silent) and the pacing violations the simulated device saw.
Prints one JSON line per pacing with the machine and the date of the run.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import statistics
import time

from julabo_fsm.link import SerialLink
from julabo_fsm.protocol import ProtocolError, encode, reply_text

from .conftest import SimProcess

CYCLE = ("STATUS", "IN_PV_00", "IN_PV_01", "IN_PV_02", "IN_SP_00")


def measure(sim: SimProcess, pacing: float, queries: int) -> dict[str, object]:
    link = SerialLink(sim.tcp_url, pacing_s=pacing, reply_timeout_s=0.5)
    link.open()
    silent = garbled = 0
    sent: list[float] = []
    try:
        for i in range(queries):
            raw = link.transact(encode(CYCLE[i % len(CYCLE)]), True)
            sent.append(link.pacer._last or time.monotonic())  # when the command went out
            if not raw:
                silent += 1
                continue
            try:
                reply_text(raw)
            except ProtocolError:
                garbled += 1
        (device,) = [c for c in sim.state()["connections"] if c["kind"] == "tcp"]
    finally:
        link.close()
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    return {
        "pacing_s": pacing,
        "queries": queries,
        "silent": silent,
        "garbled": garbled,
        "lost_pct": round(100.0 * (silent + garbled) / queries, 2),
        # what the simulated device saw: lines that came too early after it finished reading the previous one
        "device_pacing_violations": device["pacing_violations"],
        "device_commands": device["commands"],
        "gap_min_s": round(min(gaps), 5),
        "gap_median_s": round(statistics.median(gaps), 5),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--jitter", type=float, default=0.025)
    p.add_argument("--pacing", type=float, nargs="+", default=[0.25, 0.26, 0.27])
    args = p.parse_args()
    sim = SimProcess("--xon", "0", "--no-first-command-loss", "--jitter", str(args.jitter))
    try:
        for pacing in args.pacing:
            result = measure(sim, pacing, args.queries)
            result.update(
                jitter_s=args.jitter,
                machine=f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, {platform.platform()}",
                date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                load=os.getloadavg()[0],
            )
            print(json.dumps(result), flush=True)
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
