"""Interlock reaction time: chiller status STOPPED published -> caen/cmd/hv_off received (real Node-RED + Mosquitto).

    .venv/bin/python bench/interlock_reaction.py [--trips 50]

Writes bench/results/interlock_reaction.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from trackerdcs.client import DcsClient
from trackerdcs.localbroker import REPO, LocalBroker, free_port, wait_port


def chiller(state: str) -> str:
    return json.dumps({"state": state, "connected": True, "bath_temp": -20.0, "ts": time.time()})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trips", type=int, default=50)
    n = ap.parse_args().trips
    work = Path(tempfile.mkdtemp(prefix="bench-interlock-"))
    broker = LocalBroker(work / "mqtt", work / "secrets")
    broker.start()
    port = free_port()
    user_dir = work / "nr"
    user_dir.mkdir()
    shutil.copy(REPO / "node-red" / "flows.json", user_dir / "flows.json")
    env = {
        **os.environ,
        **broker.env("nodered"),
        "NODE_RED_USER_DIR": str(user_dir),
        "NODE_RED_FLOW_FILE": str(user_dir / "flows.json"),
        "NODE_RED_CREDENTIAL_SECRET": os.urandom(16).hex(),
        "NODE_RED_PORT": str(port),
        "MQTT_CLIENT_ID": "bench-nr",
        "INTERLOCK_LV_OFF_DELAY_S": "0",
    }
    with open(work / "node-red.log", "wb") as log:
        nr = subprocess.Popen(
            [str(REPO / "node-red" / "run")], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    reactions: list[float] = []
    try:
        wait_port("127.0.0.1", port, 40)
        with (
            DcsClient(broker.settings("julabo", client_id="bench-julabo")) as ju,
            DcsClient(broker.settings("operator", client_id="bench-op")) as op,
        ):
            op.subscribe(["interlock/status", "interlock/reply"])
            op.wait_for("interlock/status", lambda m: True, 20)
            for i in range(n):
                ju.client.publish("julabo/status", chiller("RUNNING"), qos=1, retain=True)
                op.wait_for("interlock/status", lambda m: m.json()["conditions"] == [], 10)
                ident = f"bench-{i}"
                op.client.publish("interlock/cmd/acknowledge", json.dumps({"id": ident}), qos=1)
                op.wait_for("interlock/reply", lambda m, k=ident: m.json().get("id") == k, 5)
                op.wait_for("interlock/status", lambda m: m.json()["state"] == "OK", 5)
                seen: list[float] = []
                op.watch("caen/cmd/hv_off", lambda m, s=seen: s.append(time.perf_counter()))
                t0 = time.perf_counter()
                ju.client.publish("julabo/status", chiller("STOPPED"), qos=1, retain=True)
                while not seen and time.perf_counter() - t0 < 5:
                    time.sleep(0.0005)
                reactions.append(seen[0] - t0 if seen else float("inf"))
                op.wait_for("interlock/status", lambda m: m.json()["state"] == "TRIPPED", 5)
            ju.client.publish("julabo/status", b"", qos=1, retain=True)
    finally:
        nr.terminate()
        nr.wait(10)
        broker.stop()
    ms = sorted(r * 1000 for r in reactions)
    result = {
        "benchmark": "interlock_reaction",
        "date": "2026-11-23",
        "machine": f"{os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}",
        "trips": n,
        "p50_ms": round(statistics.median(ms), 2),
        "p90_ms": round(ms[int(0.9 * (n - 1))], 2),
        "max_ms": round(ms[-1], 2),
        "min_ms": round(ms[0], 2),
        "target_ms": 500,
    }
    print(json.dumps(result, indent=2))
    out = REPO / "bench" / "results" / "interlock_reaction.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
