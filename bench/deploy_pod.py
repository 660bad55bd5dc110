"""Deployment figures: image build (warm), pod start to ready, command round trip through the pod, power-cut
recovery, backup time, image sizes. Plays the simulation pod like tests/deploy/test_pod.py (prefixed names,
free loopback ports) and removes it afterwards.

    .venv/bin/python bench/deploy_pod.py [--rounds 10]      (root, podman; writes bench/results/deploy_pod.json)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from trackerdcs.client import DcsClient
from trackerdcs.config import MqttSettings
from trackerdcs_devstack.localbroker import free_port, wait_port
from trackerdcs_ops import backup, deploytools

REPO = Path(__file__).resolve().parents[1]


def podman(*args: str, timeout: float = 300) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=True).stdout


def wait_json(client: DcsClient, topic: str, predicate, timeout: float) -> dict:
    return client.wait_for(topic, lambda m: bool(m.payload) and predicate(m.json()), timeout=timeout).json()


def services_ready(client: DcsClient, timeout: float = 90) -> None:
    for svc in ("caen", "julabo", "ph2acf"):
        client.wait_for(f"{svc}/availability", lambda m: m.payload == b"online", timeout=timeout)
    wait_json(client, "caen/status", lambda s: s["connected"], timeout)
    wait_json(client, "julabo/status", lambda s: s["connected"], timeout)


def rearm_interlock(client: DcsClient) -> None:
    """With Node-RED in the pod, a stopped chiller trips the interlock (which switches LV off): start the
    chiller and acknowledge, as an operator would, so that LV commands are not undone."""
    client.subscribe(["interlock/status", "interlock/reply"])
    client.command("julabo", "start", {}, timeout=20)
    wait_json(client, "julabo/status", lambda s: s["state"] == "RUNNING", 30)
    status = wait_json(client, "interlock/status", lambda s: not s.get("lv_off_pending"), 40)
    if status["state"] != "OK":
        wait_json(client, "interlock/status", lambda s: s["state"] == "ACK_PENDING" and not s["lv_off_pending"], 40)
        client.client.publish("interlock/cmd/acknowledge", json.dumps({"operator": "bench"}), qos=1)
        wait_json(client, "interlock/status", lambda s: s["state"] == "OK", 20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="lv_on/lv_off round trips")
    ns = parser.parse_args()
    figures: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}",
        "podman": podman("version", "--format", "{{.Client.Version}}").strip(),
    }
    t0 = time.monotonic()
    subprocess.run([str(REPO / "deploy" / "build-images")], check=True, capture_output=True, timeout=900)
    figures["build_images_s"] = round(time.monotonic() - t0, 2)
    sizes = podman("images", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}").splitlines()
    figures["image_sizes"] = sorted(line for line in sizes if "trackerdcs" in line)

    prefix = f"b{os.getpid()}-"
    pod_name = f"{prefix}trackerdcs-sim"
    work = Path(tempfile.mkdtemp(prefix="deploy-bench-"))
    try:
        secrets = work / "secrets"
        subprocess.run(
            [str(REPO / "deploy" / "setup-secrets"), "--dir", str(secrets), "--prefix", prefix],
            check=True,
            capture_output=True,
            timeout=120,
        )
        port = free_port()
        local = yaml.safe_load((REPO / "deploy" / "local-images.yml").read_text())
        result = deploytools.localize(
            deploytools.render(REPO, "sim", warn=lambda _m: None),
            local_images=local,
            prefix=prefix,
            host_ports={1883: port, 1880: free_port()},
        )
        manifest = work / "pod.yml"
        manifest.write_text(deploytools.dump(result.docs))
        figures["left_out"] = result.left_out
        figures["stand_ins"] = result.replaced
        settings = MqttSettings(
            host="127.0.0.1", port=port, username="operator", password_file=str(secrets / "mqtt-operator")
        )

        t0 = time.monotonic()
        podman("play", "kube", str(manifest))
        figures["play_kube_s"] = round(time.monotonic() - t0, 2)
        wait_port("127.0.0.1", port, 60)
        figures["play_to_mqtt_s"] = round(time.monotonic() - t0, 2)
        with DcsClient(settings) as client:
            client.subscribe(["+/availability", "caen/status/#", "julabo/status"])
            services_ready(client)
            figures["play_to_services_ready_s"] = round(time.monotonic() - t0, 2)
            if "node-red" not in result.left_out:
                rearm_interlock(client)
            on, off = [], []
            for _ in range(ns.rounds):
                t = time.monotonic()
                client.command("caen", "lv_on", {"modules": ["module_0"]}, timeout=20)
                wait_json(
                    client, "caen/status/channel/module_0_lv", lambda s: s["state"] == "ON" and s["vmon"] > 12, 30
                )
                on.append(time.monotonic() - t)
                t = time.monotonic()
                client.command("caen", "lv_off", {"modules": ["module_0"]}, timeout=20)
                wait_json(
                    client, "caen/status/channel/module_0_lv", lambda s: s["state"] == "OFF" and s["vmon"] < 1, 30
                )
                off.append(time.monotonic() - t)
            figures["lv_on_to_vmon_s"] = {"median": round(statistics.median(on), 3), "max": round(max(on), 3)}
            figures["lv_off_to_vmon_s"] = {"median": round(statistics.median(off), 3), "max": round(max(off), 3)}

        t0 = time.monotonic()
        code = backup.main_backup(["--prefix", prefix, "--pod", pod_name, "--dest", str(work / "backups")])
        figures["backup_s"] = round(time.monotonic() - t0, 2) if code == 0 else None

        podman("pod", "kill", pod_name)
        t0 = time.monotonic()
        podman("play", "kube", "--replace", str(manifest))
        wait_port("127.0.0.1", port, 60)
        with DcsClient(settings) as client:
            client.subscribe(["+/availability", "caen/status/#", "julabo/status"])
            services_ready(client)
        figures["power_cut_replay_to_services_ready_s"] = round(time.monotonic() - t0, 2)
    finally:
        subprocess.run(["podman", "pod", "rm", "-f", "-t", "5", pod_name], capture_output=True, timeout=120)
        for volume in podman("volume", "ls", "--format", "{{.Name}}").split():
            if volume.startswith(prefix):
                subprocess.run(["podman", "volume", "rm", "-f", volume], capture_output=True)
        for secret in podman("secret", "ls", "--format", "{{.Name}}").split():
            if secret.startswith(prefix):
                subprocess.run(["podman", "secret", "rm", secret], capture_output=True)
        subprocess.run(["rm", "-rf", str(work)])
    out = REPO / "bench" / "results" / "deploy_pod.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    json.dump(figures, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
