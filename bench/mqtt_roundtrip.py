"""Foundation benchmark: command round trip through a real Mosquitto (auth + ACL) to a Service and back.

Measures what the shared plumbing costs, without any device: ``DcsClient.command`` → broker → Service worker →
reply on the MQTT v5 response topic → client. Also the throughput of deadbanded status publication.

    .venv/bin/python bench/mqtt_roundtrip.py [--samples 2000]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from trackerdcs.client import DcsClient
from trackerdcs.commands import Arg
from trackerdcs.service import Service
from trackerdcs_devstack.localbroker import LocalBroker

RESULTS = Path(__file__).parent / "results"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    with LocalBroker(work / "broker", work / "secrets") as broker:
        svc = Service("caen", broker.settings("caen", client_id="bench-svc"))
        svc.add_command("set", lambda a: {"value": a["value"]}, [Arg("value", float)])
        svc.start()
        assert svc.wait_connected(10)
        with DcsClient(broker.settings("operator")) as op:
            for i in range(100):  # warm-up
                op.command("caen", "set", value=i)
            rtt = []
            for i in range(args.samples):
                t0 = time.perf_counter()
                op.command("caen", "set", value=i)
                rtt.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            published = sum(
                svc.publish_status({"state": "ON", "vmon": float(i)}, f"channel/c{i % 1000}") for i in range(20000)
            )
            status_rate = published / (time.perf_counter() - t0)
        svc.stop()
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}",
        "samples": args.samples,
        "command_rtt_ms": {"p50": statistics.median(rtt), "p99": percentile(rtt, 0.99), "max": max(rtt)},
        "status_publish_per_s": status_rate,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "mqtt_roundtrip.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
