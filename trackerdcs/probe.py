"""Container liveness probe of a trackerdcs service, seen from MQTT.

The pod runs it as each service container's liveness probe::

    python -m trackerdcs.probe caen       # exit 0 alive, 1 not; one line saying why

It needs only the runtime package (the MQTT client and the container's DCS_MQTT_* settings).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time


def probe(service: str, timeout: float = 5.0, max_health_age: float = 60.0) -> tuple[bool, str]:
    """Liveness of a trackerdcs service seen from MQTT, with the container's own DCS_MQTT_* credentials.

    Alive when ``<service>/availability`` is ``online`` and ``<service>/health`` is younger than
    ``max_health_age`` seconds. A broker that cannot be reached is not the service's fault: alive.
    """
    from trackerdcs.client import DcsClient
    from trackerdcs.config import ConfigError, MqttSettings

    try:
        settings = MqttSettings.from_config({})
    except ConfigError as exc:
        return False, f"config: {exc}"
    client_id = f"{service}-probe-{socket.gethostname()}-{os.getpid()}"
    try:
        client = DcsClient(settings, client_id=client_id, connect_timeout=timeout).connect()
    except Exception as exc:
        return True, f"broker not reachable ({exc}); not blaming the service"
    try:
        client.subscribe([f"{service}/availability", f"{service}/health"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest = client.latest(f"{service}/#")
            avail = latest.get(f"{service}/availability")
            health = latest.get(f"{service}/health")
            if avail is not None and health is not None:
                break
            time.sleep(0.05)
        if avail is None or avail.payload.decode(errors="replace") != "online":
            return False, f"{service}/availability is {avail.payload.decode() if avail else 'missing'}"
        try:
            age = time.time() - float(json.loads(health.payload)["ts"]) if health else float("inf")
        except (ValueError, KeyError, TypeError):
            age = float("inf")
        if age > max_health_age:
            return False, f"{service}/health is {age:.0f} s old"
        return True, f"online, health {age:.0f} s old"
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m trackerdcs.probe <service>``: print why, exit 0 when alive and 1 when not."""
    parser = argparse.ArgumentParser(prog="python -m trackerdcs.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("service")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--max-health-age", type=float, default=60.0)
    ns = parser.parse_args(argv)
    ok, why = probe(ns.service, ns.timeout, ns.max_health_age)
    print(f"{ns.service}: {why}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
