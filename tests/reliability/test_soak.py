"""A bounded soak: 1,000 CAEN channels changing at 1 Hz, the chiller polled, a calibration run every 20 s,
operator commands now and then. CPU and memory of every process stay flat and no queue grows.

CI runs 60 s of steady state; ``TRACKERDCS_SOAK_S=600`` runs the 10-minute version (figures in
docs/reliability.md). The samples go to tests/artifacts/reliability-soak-<seconds>s.json.
"""

from __future__ import annotations

import os
import statistics
import time

import psutil
import pytest

from trackerdcs.client import DcsClient

from .conftest import record
from .stand import Stand

SOAK_S = float(os.environ.get("TRACKERDCS_SOAK_S", "60"))
SAMPLE_S = 5.0
RUN_EVERY_S = 20.0
MODULES = 500  # 1,000 channels

pytestmark = [pytest.mark.slow, pytest.mark.timeout(SOAK_S + 180)]

PROCESSES = ("caen-fsm", "julabo-fsm", "ph2acf-bridge", "caen-sim", "julabo-sim", "ph2acf-sim")


def thirds(values: list[float]) -> tuple[float, float]:
    """Mean of the first and of the last third of a series."""
    n = max(1, len(values) // 3)
    return statistics.fmean(values[:n]), statistics.fmean(values[-n:])


def test_soak_keeps_cpu_memory_and_queues_flat(broker, tmp_path):
    stand = Stand(broker, tmp_path / "soak", modules=MODULES, caen_noise_hz=1.0, caen_tick_s=0.1)
    with DcsClient(broker.settings("operator")) as dcs:
        try:
            t0 = time.monotonic()
            stand.start(dcs, timeout=120)
            startup_s = time.monotonic() - t0
            procs = {name: stand.ps(name) for name in PROCESSES}
            procs["mosquitto"] = psutil.Process(broker.proc.pid)
            for p in procs.values():
                p.cpu_percent(None)
            dcs.subscribe(["+/health"])
            samples: list[dict] = []
            runs_started = runs_done = commands = 0
            next_run = time.monotonic()
            dcs.subscribe(["ph2acf/event"])
            stop_events: list[dict] = []
            dcs.watch(
                "ph2acf/event", lambda m: stop_events.append(m.json()) if m.json()["kind"] == "run_stop" else None
            )
            end = time.monotonic() + SOAK_S
            next_sample = time.monotonic() + SAMPLE_S
            while time.monotonic() < end:
                now = time.monotonic()
                if now >= next_run:
                    reply = dcs.command("ph2acf", "start", calibration="pixelalive", operator="soak", check=False)
                    runs_started += bool(reply.get("ok"))
                    next_run = now + RUN_EVERY_S
                dcs.command("caen", "set", channel=f"M{commands % MODULES:04d}_lv", param="V0Set", value=12.0)
                if commands % 10 == 0:
                    dcs.command("julabo", "refresh", timeout=10)
                commands += 1
                if now >= next_sample:
                    next_sample = now + SAMPLE_S
                    health = {t.split("/")[0]: m.json() for t, m in dcs.latest("+/health").items() if m.payload}
                    samples.append(
                        {
                            "t": round(now - (end - SOAK_S), 1),
                            **{f"{n}_cpu": p.cpu_percent(None) for n, p in procs.items()},
                            **{f"{n}_rss_mb": round(p.memory_info().rss / 1e6, 1) for n, p in procs.items()},
                            **{
                                f"{svc}_{q}": h.get(q)
                                for svc, h in health.items()
                                if svc in ("caen", "julabo", "ph2acf")
                                for q in ("commands_queued", "mqtt_out_queued", "msgs_out_per_s")
                            },
                        }
                    )
                time.sleep(0.5)
            deadline = time.monotonic() + 20
            while len(stop_events) < runs_started and time.monotonic() < deadline:
                time.sleep(0.2)
            runs_done = sum(e.get("outcome") == "done" for e in stop_events)
            alive = stand.alive()
            tracebacks = stand.tracebacks()
        finally:
            stand.stop()

    summary: dict = {
        "soak_s": SOAK_S,
        "channels": 2 * MODULES,
        "startup_s": round(startup_s, 1),
        "samples": len(samples),
        "operator_commands": commands,
        "runs_started": runs_started,
        "runs_done": runs_done,
    }
    for name in (*PROCESSES, "mosquitto"):
        cpu = [s[f"{name}_cpu"] for s in samples[1:]]  # the first sample includes start-up
        rss = [s[f"{name}_rss_mb"] for s in samples[1:]]
        c0, c1 = thirds(cpu)
        r0, r1 = thirds(rss)
        summary[name] = {"cpu_first_third": round(c0, 1), "cpu_last_third": round(c1, 1),
                         "rss_first_third_mb": round(r0, 1), "rss_last_third_mb": round(r1, 1),
                         "rss_max_mb": max(rss)}  # fmt: skip
    for svc in ("caen", "julabo", "ph2acf"):
        for q in ("commands_queued", "mqtt_out_queued"):
            summary[f"{svc}_{q}_max"] = max((s.get(f"{svc}_{q}") or 0) for s in samples)
    record(f"soak-{int(SOAK_S)}s", {"summary": summary, "samples": samples})
    print(summary)

    assert all(alive.values()), alive
    assert tracebacks == dict.fromkeys(tracebacks, 0), tracebacks
    assert runs_started >= max(1, int(SOAK_S // RUN_EVERY_S) - 1) and runs_done == runs_started
    for name in (*PROCESSES, "mosquitto"):
        s = summary[name]
        # memory: no trend beyond noise (allocator arenas settle within the first minute)
        assert s["rss_last_third_mb"] - s["rss_first_third_mb"] < max(8.0, 0.05 * s["rss_first_third_mb"]), (name, s)
        # CPU: no creeping load
        assert s["cpu_last_third"] <= 1.5 * s["cpu_first_third"] + 10.0, (name, s)
    for svc in ("caen", "julabo", "ph2acf"):
        assert summary[f"{svc}_commands_queued_max"] < 50, summary
        assert summary[f"{svc}_mqtt_out_queued_max"] < 1000, summary
