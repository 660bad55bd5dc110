"""Simulated environment sensors (temperature + relative humidity) publishing ``env/<sensor>``.

Real stands publish the same payload from their sensor gateways (user ``sensors``). The simulation stack runs
this so the dew-point interlock has inputs: ``{"temperature": °C, "humidity": %RH, "ts": ...}``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import threading
import time

from trackerdcs.config import MqttSettings
from trackerdcs.logsetup import setup_logging
from trackerdcs.service import build_client, connect_properties


def reading(base_temp: float, base_rh: float, t: float, rng: random.Random) -> dict[str, float]:
    """One plausible reading: a slow daily-like drift plus sensor noise."""
    temp = base_temp + 0.3 * math.sin(t / 600.0) + rng.gauss(0, 0.02)
    rh = max(0.0, min(100.0, base_rh + 0.5 * math.sin(t / 900.0) + rng.gauss(0, 0.05)))
    return {"temperature": round(temp, 3), "humidity": round(rh, 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="envsim", description=__doc__)
    parser.add_argument("--sensor", action="append", default=None, help="sensor name (repeatable)")
    parser.add_argument("--temperature", type=float, default=20.0, help="mean air temperature, °C")
    parser.add_argument("--humidity", type=float, default=5.0, help="mean relative humidity, %%RH (dry air box)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between readings")
    args = parser.parse_args(argv)
    setup_logging(name="envsim")
    sensors = args.sensor or ["box"]
    settings = MqttSettings.from_config({})
    client = build_client(settings, settings.client_id or "trackerdcs-envsim")
    client.connect_async(settings.host, settings.port, clean_start=True, properties=connect_properties(settings))
    client.loop_start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    rng = random.Random(1)
    t0 = time.time()
    while not stop.is_set():
        for name in sensors:
            doc = {**reading(args.temperature, args.humidity, time.time() - t0, rng), "ts": time.time()}
            client.publish(f"env/{name}", json.dumps(doc), qos=0, retain=True)
        stop.wait(args.interval)
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
