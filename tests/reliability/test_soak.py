"""A bounded soak: 1,000 CAEN channels changing at 1 Hz, the chiller polled, calibration runs (ten in quick
succession, then one every 15 s) and a steady stream of operator commands to every service. What the operator
gets: memory and CPU of every process stay flat, every command is answered in time, and no queue grows.

CI runs 80 s (40 s warm-up, 40 s judged); ``TRACKERDCS_SOAK_S=600`` runs the 10-minute version (figures in
docs/reliability.md). The samples go to tests/artifacts/reliability-soak-<seconds>s.json.

How the checks can fail (each was shown failing with a leak or a slow-down injected into one service):

* memory: process RSS is sampled every 2 s; after a warm-up of ten calibration runs in quick succession and two
  spaced ones (the bridge's first runs grow it by a few MB, once: measured over 5 minutes with a run every 15 s,
  it levels off after about ten runs, see docs/reliability.md), the Theil-Sen line through the samples (the
  median of the slopes between all pairs, so one step does not count as a trend) gives the rise over the steady
  window, which must stay below a small floor: a leak of 3 MB per minute (50 kB/s) injected into julabo-fsm
  fails it (rise 2.0 MB); ph2acf-bridge has a higher floor, see LEAK_FLOOR_MB_FOR;
* queues: commands are sent at a fixed rate from a pool without waiting for each other, so a service that
  falls behind shows as commands outstanding at the client (sent, not yet answered) growing from one sample
  to the next, and as commands timing out; each service's own ``commands_queued``/``mqtt_out_queued`` must be
  present in its health documents (a missing figure is a failure, not a zero).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest

from trackerdcs.client import DcsClient

from .conftest import record
from .stand import Stand

SOAK_S = float(os.environ.get("TRACKERDCS_SOAK_S", "80"))
SAMPLE_S = 2.0
WARMUP_S = 40.0  # warm-up runs done, caches settled; samples before are recorded but not judged
#: seconds after the start of the soak: ten runs back to back, then two spaced as in the steady phase (the
#: bridge's heap reaches its working size only once a run has met the condition traffic of a quiet interval)
WARMUP_RUNS_AT = (*(2.5 * k for k in range(10)), 27.5, 35.0)
RUN_EVERY_S = 15.0  # after the warm-up: one run every RUN_EVERY_S, the first at WARMUP_S + 5
MODULES = 500  # 1,000 channels
#: a steady-state RSS rise (from the fitted line) at or above this fails: over the 40 s window 1.5 MB is a leak
#: of 2.25 MB per minute. Without an injected leak the rise is 0.0-0.2 MB for every process but ph2acf-bridge,
#: whose heap moves by steps of up to about 1.5 MB at the end of each calibration run (it builds and writes a
#: document holding the status of 1,000 channels twice); seven soaks gave fitted rises from -1.0 to 2.8 MB, and
#: over 5 minutes it levels off (docs/reliability.md). Its floor is therefore 4 MB: here it catches a leak of
#: about 6 MB per minute; slower leaks of the bridge are for the 10-minute soak and test_ph2acf_archive_memory.py.
LEAK_FLOOR_MB = 1.5
LEAK_FLOOR_MB_FOR = {"ph2acf-bridge": 4.0}
#: commands per second sent to each service, without waiting for replies (a slow service falls behind)
RATES = {"caen": 8.0, "julabo": 0.1, "ph2acf": 2.0}  # a julabo refresh takes seconds (paced serial queries)
COMMAND_TIMEOUT_S = 10.0
OUTSTANDING_MAX = 25  # commands sent but not yet answered, per service, at any sample

pytestmark = [pytest.mark.slow, pytest.mark.serial, pytest.mark.timeout(SOAK_S + 180)]  # judges CPU and memory

PROCESSES = ("caen-fsm", "julabo-fsm", "ph2acf-bridge", "caen-sim", "julabo-sim", "ph2acf-sim")
SERVICES = ("caen", "julabo", "ph2acf")


def thirds(values: list[float]) -> tuple[float, float]:
    """Mean of the first and of the last third of a series."""
    n = max(1, len(values) // 3)
    return statistics.fmean(values[:n]), statistics.fmean(values[-n:])


def fitted_rise(t: list[float], values: list[float]) -> float:
    """Rise of the Theil-Sen line through (t, values) from the first to the last t: the median of the slopes
    between all pairs of samples, so a single step (one allocation that stays) does not read as a trend."""
    slopes = [
        (values[j] - values[i]) / (t[j] - t[i]) for i in range(len(t)) for j in range(i + 1, len(t)) if t[j] > t[i]
    ]
    return statistics.median(slopes) * (t[-1] - t[0])


@dataclass
class Load:
    """Operator commands at fixed rates through a thread pool; counts what was sent, answered and failed."""

    dcs: DcsClient
    makers: dict[str, Callable[[int], tuple[str, dict[str, Any]]]]
    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERVICES, 0))
    answered: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERVICES, 0))
    failures: list[str] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SERVICES})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _one(self, svc: str, command: str, args: dict[str, Any]) -> None:
        t0 = time.monotonic()
        try:
            reply = self.dcs.command(svc, command, args, timeout=COMMAND_TIMEOUT_S, check=False)
            if not reply.get("ok"):
                with self.lock:
                    self.failures.append(f"{svc} {command}: {reply.get('error')}")
        except Exception as exc:  # NoReply: the service did not keep up
            with self.lock:
                self.failures.append(f"{svc} {command}: {exc}")
        with self.lock:
            self.answered[svc] += 1
            self.latencies[svc].append(time.monotonic() - t0)

    def outstanding(self) -> dict[str, int]:
        with self.lock:
            return {svc: self.sent[svc] - self.answered[svc] for svc in SERVICES}

    def run(self, until: float, pool: ThreadPoolExecutor) -> None:
        start = time.monotonic()
        while (now := time.monotonic()) < until:
            for svc, rate in RATES.items():
                due = int((now - start) * rate) + 1
                while self.sent[svc] < due:
                    command, args = self.makers[svc](self.sent[svc])
                    with self.lock:
                        self.sent[svc] += 1
                    pool.submit(self._one, svc, command, args)
            time.sleep(0.05)


def test_soak_keeps_cpu_memory_and_queues_flat(broker, tmp_path):
    stand = Stand(broker, tmp_path / "soak", modules=MODULES, caen_noise_hz=1.0, caen_tick_s=0.1)
    makers = {
        "caen": lambda i: ("set", {"channel": f"M{i % MODULES:04d}_lv", "param": "V0Set", "value": 12.0}),
        "julabo": lambda i: ("refresh", {}),
        "ph2acf": lambda i: ("status", {}) if i % 2 else ("runs", {"limit": 5}),
    }
    with DcsClient(broker.settings("operator")) as dcs, DcsClient(broker.settings("operator")) as loader:
        try:
            t0 = time.monotonic()
            stand.start(dcs, timeout=120)
            startup_s = time.monotonic() - t0
            procs = {name: stand.ps(name) for name in PROCESSES}
            procs["mosquitto"] = psutil.Process(broker.proc.pid)
            for p in procs.values():
                p.cpu_percent(None)
            dcs.subscribe(["+/health"])
            # (seconds since the soak began, document): the retained one from the start-up comes first (t < 0)
            health_docs: dict[str, list[tuple[float, dict]]] = {svc: [] for svc in SERVICES}
            soak_begin = [float("inf")]

            def keep_health(m: Any) -> None:
                health_docs.get(m.topic.split("/")[0], []).append((time.monotonic() - soak_begin[0], m.json()))

            dcs.watch("+/health", keep_health)
            stop_events: list[dict] = []
            dcs.watch(
                "ph2acf/event", lambda m: stop_events.append(m.json()) if m.json()["kind"] == "run_stop" else None
            )
            samples: list[dict] = []
            runs_started = 0
            load = Load(loader, makers)
            begin = soak_begin[0] = time.monotonic()
            end = begin + SOAK_S
            with ThreadPoolExecutor(max_workers=16, thread_name_prefix="soak-cmd") as pool:
                feeder = threading.Thread(target=load.run, args=(end, pool), daemon=True)
                feeder.start()
                runs_at = [*WARMUP_RUNS_AT, *(WARMUP_S + 5 + k * RUN_EVERY_S for k in range(int(SOAK_S)))]
                next_run, next_sample = begin + runs_at.pop(0), begin
                while (now := time.monotonic()) < end:
                    if now >= next_run:
                        reply = dcs.command("ph2acf", "start", calibration="pixelalive", operator="soak", check=False)
                        if reply.get("ok"):
                            runs_started += 1
                            next_run = begin + runs_at.pop(0)
                        else:  # the previous run still finishing on a loaded machine: try again shortly
                            next_run = now + 0.5
                    if now >= next_sample:
                        next_sample = now + SAMPLE_S
                        samples.append(
                            {
                                "t": round(now - begin, 1),
                                **{f"{n}_cpu": p.cpu_percent(None) for n, p in procs.items()},
                                **{f"{n}_rss_mb": round(p.memory_info().rss / 1e6, 2) for n, p in procs.items()},
                                **{f"{svc}_outstanding": n for svc, n in load.outstanding().items()},
                            }
                        )
                    time.sleep(0.1)
                feeder.join(5)
            deadline = time.monotonic() + 20
            while len(stop_events) < runs_started and time.monotonic() < deadline:
                time.sleep(0.2)
            runs_done = sum(e.get("outcome") == "done" for e in stop_events)
            alive = stand.alive()
            tracebacks = stand.tracebacks()
        finally:
            stand.stop()

    steady = [s for s in samples if s["t"] >= WARMUP_S]
    t = [s["t"] for s in steady]
    summary: dict[str, Any] = {
        "soak_s": SOAK_S,
        "channels": 2 * MODULES,
        "startup_s": round(startup_s, 1),
        "samples": len(samples),
        "steady_samples": len(steady),
        "commands_sent": dict(load.sent),
        "commands_failed": len(load.failures),
        "command_p95_s": {s: round(statistics.quantiles(v, n=20)[-1], 3) for s, v in load.latencies.items() if v},
        "runs_started": runs_started,
        "runs_done": runs_done,
    }
    for name in (*PROCESSES, "mosquitto"):
        cpu = [s[f"{name}_cpu"] for s in steady]
        rss = [s[f"{name}_rss_mb"] for s in steady]
        c0, c1 = thirds(cpu)
        summary[name] = {"cpu_first_third": round(c0, 1), "cpu_last_third": round(c1, 1),
                         "rss_start_mb": rss[0], "rss_end_mb": rss[-1], "rss_max_mb": max(rss),
                         "rss_fitted_rise_mb": round(fitted_rise(t, rss), 2)}  # fmt: skip
    for svc in SERVICES:
        out = [s[f"{svc}_outstanding"] for s in steady]
        o0, o1 = thirds(out)
        docs = [d for _t, d in health_docs[svc] if d]
        # queues are judged in the steady part, like every other figure: at start-up a service queues its whole
        # first publication (1,000 channel topics for caen) and may report health in the middle of it
        steady_docs = [d for t_doc, d in health_docs[svc] if d and t_doc >= WARMUP_S]
        summary[svc] = {
            "outstanding_max": max(out), "outstanding_first_third": round(o0, 1),
            "outstanding_last_third": round(o1, 1), "health_docs": len(docs), "steady_health_docs": len(steady_docs),
            **{f"{q}_max": max((d[q] for d in steady_docs if q in d), default=None)
               for q in ("commands_queued", "mqtt_out_queued")},
            "health_docs_missing_queue_figures": sum(
                1 for d in docs if not {"commands_queued", "mqtt_out_queued"} <= set(d)),
        }  # fmt: skip
    record(f"soak-{int(SOAK_S)}s", {"summary": summary, "samples": samples})
    print(summary)

    assert all(alive.values()), alive
    assert tracebacks == dict.fromkeys(tracebacks, 0), tracebacks
    assert len(steady) >= (SOAK_S - WARMUP_S) / SAMPLE_S - 2, summary["steady_samples"]
    runs_due = len(WARMUP_RUNS_AT) + int((SOAK_S - WARMUP_S - 5) // RUN_EVERY_S) + 1
    assert runs_started >= runs_due - 1 and runs_done == runs_started, (runs_due, runs_started, runs_done)
    for svc, rate in RATES.items():
        assert load.sent[svc] >= 0.9 * rate * SOAK_S, (svc, load.sent[svc])  # the load really ran
    for svc in SERVICES:
        s = summary[svc]
        assert s["outstanding_max"] <= OUTSTANDING_MAX, (svc, "falls behind", s)
        assert s["outstanding_last_third"] <= s["outstanding_first_third"] + 2, (svc, "backlog grows", s)
        # each service published health (every 10 s) with both queue figures, and the queues stayed short
        assert s["health_docs"] >= SOAK_S // 10 - 1 and s["health_docs_missing_queue_figures"] == 0, (svc, s)
        assert s["steady_health_docs"] >= (SOAK_S - WARMUP_S) // 10 - 1, (svc, "too few health documents to judge", s)
        assert s["commands_queued_max"] < OUTSTANDING_MAX and s["mqtt_out_queued_max"] < 1000, (svc, s)
    assert load.failures == [], load.failures[:10]
    for name in (*PROCESSES, "mosquitto"):
        s = summary[name]
        # memory: the fitted line over the steady window may not rise beyond noise
        assert s["rss_fitted_rise_mb"] < LEAK_FLOOR_MB_FOR.get(name, LEAK_FLOOR_MB), (name, "RSS grows", s)
        # CPU: no creeping load
        assert s["cpu_last_third"] <= 1.5 * s["cpu_first_third"] + 10.0, (name, s)
