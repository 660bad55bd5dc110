"""Julabo status cycle time and command latency against the simulator, honouring the 250 ms pacing.

Runs a real Mosquitto (LocalBroker), ``julabo-sim`` on TCP (pacing 0.25 s, XON/XOFF noise on) and the
julabo service in-process; measures
  * the status cycle: time between two complete cycles (STATUS, bath, power, external + one slow value),
  * a full read of every value (the ``refresh`` command, over MQTT),
  * operator command latency over MQTT (set_setpoint with STATUS check and read-back, select_setpoint,
    start, stop), and
  * the pacing violations the simulator saw (must be 0).
Writes bench/results/julabo_cycle.json.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from julabo_fsm.app import JulaboApp, JulaboConfig

from trackerdcs.client import DcsClient
from trackerdcs_devstack.localbroker import LocalBroker

OUT = Path(__file__).parent / "results" / "julabo_cycle.json"
CYCLES = 12
COMMANDS = 10


def control(port: int, line: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(line.encode() + b"\n")
        return s.makefile().readline().strip()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_s": round(statistics.median(values), 4),
        "p95_s": round(pct(values, 0.95), 4),
        "max_s": round(max(values), 4),
    }


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="julabo-bench-"))
    sim = subprocess.Popen(
        [str(Path(sys.executable).parent / "julabo-sim"), "--no-pty", "--xon", "0.05", "--seed", "3"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    endpoints = json.loads(sim.stdout.readline()[6:])  # type: ignore[union-attr]
    broker = LocalBroker(work / "mosquitto", work / "secrets")
    broker.start()
    cfg = JulaboConfig.from_config(
        {
            "julabo": {
                "connection": f"socket://127.0.0.1:{endpoints['tcp_port']}",
                "pacing_s": 0.25,
                "poll_interval_s": 0.0,
                "limits": {"setpoint_min": -30, "setpoint_max": 40},
            }
        }
    )
    app = JulaboApp(cfg, broker.settings("julabo", client_id="julabo-bench"))
    ends: list[float] = []
    forward = app.snapshot

    def recorder(payload: dict, force: bool) -> None:
        if not force:
            ends.append(time.monotonic())
        forward(payload, force)

    app.driver.listener = type("L", (), {"snapshot": staticmethod(recorder), "event": app.event})()
    try:
        app.start()
        with DcsClient(broker.settings("operator")) as op:
            deadline = time.monotonic() + 20
            while len(ends) < CYCLES + 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            window = ends[1 : CYCLES + 2]  # skip the connect sweep
            cycles = [b - a for a, b in itertools.pairwise(window)]
            refresh, set_sp, select, start_stop = [], [], [], []
            for _ in range(3):
                t = time.perf_counter()
                op.command("julabo", "refresh")
                refresh.append(time.perf_counter() - t)
            for i in range(COMMANDS):
                t = time.perf_counter()
                op.command("julabo", "set_setpoint", index=1 + i % 3, value=10.0 + i)
                set_sp.append(time.perf_counter() - t)
                t = time.perf_counter()
                op.command("julabo", "select_setpoint", index=1 + i % 3)
                select.append(time.perf_counter() - t)
            for _ in range(3):
                for cmd in ("start", "stop"):
                    t = time.perf_counter()
                    op.command("julabo", cmd)
                    start_stop.append(time.perf_counter() - t)
        state = json.loads(control(endpoints["control_port"], "state"))
    finally:
        app.stop()
        broker.stop()
        os.killpg(sim.pid, signal.SIGTERM)
        sim.wait(5)
    result = {
        "benchmark": "julabo_cycle",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"2 cores, Debian 12, Python {platform.python_version()}",
        "pacing_s": 0.25,
        "status_cycle": summary(cycles),
        "status_cycle_commands": 5,
        "full_refresh_over_mqtt": summary(refresh),
        "set_setpoint_over_mqtt": summary(set_sp),
        "select_setpoint_over_mqtt": summary(select),
        "start_stop_over_mqtt": summary(start_stop),
        "simulator_pacing_violations": sum(c["pacing_violations"] for c in state["connections"]),
        "simulator_commands": sum(c["commands"] for c in state["connections"]),
        "driver_counters": app.driver.counters,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
