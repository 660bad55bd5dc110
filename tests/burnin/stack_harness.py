"""Harness of the stack tests (test_stack_*.py): the burn-in sequencer against the whole simulation stack (real
Mosquitto, Node-RED interlocks, caen-fsm on the simulated crate's Channel Access, julabo-fsm on the simulated
chiller, the ph2acf bridge and its simulator), with a sequencer of the test's own that it can kill and restart."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from julabo_sim import control_client

from trackerdcs.client import DcsClient, Message
from trackerdcs.config import MqttSettings, load_yaml
from trackerdcs_devstack.localbroker import REPO, free_port
from trackerdcs_devstack.localca import loopback_ca_env
from trackerdcs_devstack.supervisor import stop_process

STACK_MARKS = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (REPO / "node-red" / "node_modules" / "node-red").is_dir(), reason="Node-RED not installed (setup.sh)"
    ),
]
#: Every simulator and the sequencer run this many times faster than a real stand (one clock: dcs-sim --time-scale
#: and the sequencer's time_scale), so that the short recipe takes seconds; the interlock (Node-RED) and the
#: services' own safety paths stay in real time.
SCALE = 4.0
BURNIN = Path(sys.executable).with_name("burnin")
DCS = Path(sys.executable).with_name("dcs")


class Stack:
    def __init__(self, var: Path) -> None:
        self.var = var
        self.ports = json.loads((var / "ports.json").read_text())
        self.mqtt = load_yaml(var / "dcs.yml")["mqtt"]
        self.dcs = DcsClient(MqttSettings.from_config(self.mqtt, env={}))
        self.messages: list[Message] = []
        self.proc: subprocess.Popen[str] | None = None
        self.config = var / "burnin.yml"
        self.config.write_text(
            "mqtt:\n"
            f"  host: 127.0.0.1\n  port: {self.mqtt['port']}\n  username: burnin\n"
            f"  password_file: {var / 'secrets' / 'mqtt-burnin'}\n"
            "stand: simstand\n"
            "modules:\n"
            "  module_0: {hv_limit_v: 350, compliance_ua: 4, bias_v: 200}\n"
            "  module_1: {hv_limit_v: 600, compliance_ua: 4, bias_v: 200}\n"
            "  module_2: {hv_limit_v: 600, compliance_ua: 4, bias_v: 200}\n"
            "humidity_sensors: [box, wetbox]\n"
            "limits: {setpoint_min: -35, setpoint_max: 40}\n"
            "retry_interval_s: 2\n"
            f"state_dir: {var / 'burnin' / 'state'}\n"
            f"archive_dir: {var / 'burnin' / 'archive'}\n"
            f"spool_dir: {var / 'burnin' / 'spool'}\n"
            f"recipes_dir: {REPO / 'services' / 'burnin' / 'recipes'}\n"
            "mongo: {uri: 'mongomock://stand-in'}\n"
            f"time_scale: {SCALE:g}\n"
        )

    def start_burnin(self) -> None:
        log = (self.var / "logs" / "burnin.log").open("a")
        self.proc = subprocess.Popen([str(BURNIN), "--config", str(self.config)], stdout=log, stderr=log, text=True)
        self.dcs.wait_for(
            "burnin/availability", lambda m: m.payload == b"online" and m.received > time.time() - 5, timeout=30
        )

    def kill_burnin(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def status(self) -> dict:
        return self.dcs.command("burnin", "status")["result"]

    def wait_state(self, *states: str, timeout: float) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            st = self.status()
            if st["state"] in states:
                return st
            time.sleep(0.5)
        pytest.fail(f"burn-in not in {states} within {timeout} s: {self.status()}")

    def start_short_recipe_until(self, step_name: str, timeout: float = 300) -> None:
        """Start ``sim-short`` and return once it is at the step named ``step_name``."""
        self.dcs.command("burnin", "start", recipe="sim-short", operator="pytest")
        deadline = time.time() + timeout
        while self.status()["step_name"] != step_name:
            assert time.time() < deadline, self.status()
            time.sleep(0.2)

    def ready(self) -> None:
        """Chiller running, interlock acknowledged and OK, everything off: where every test starts."""
        d = self.dcs
        d.command("caen", "hv_off")
        d.command("caen", "lv_off")
        d.wait_for("caen/status", lambda m: m.json()["state"] == "OFF", timeout=60)
        assert control_client.send(self.ports["julabo_control"], "bath 21").startswith("OK")
        d.command("julabo", "start")
        d.wait_for("julabo/status", lambda m: m.json()["state"] == "RUNNING", timeout=20)
        d.wait_for(
            "interlock/status", lambda m: not m.json()["conditions"] and not m.json()["lv_off_pending"], timeout=60
        )
        if d.status("interlock")["state"] != "OK":
            d.command("interlock", "acknowledge", operator="pytest")
        d.wait_for("interlock/status", lambda m: m.json()["state"] == "OK", timeout=10)


@contextlib.contextmanager
def open_stack(tmp_path_factory: pytest.TempPathFactory, sim_stack_launcher: Any) -> Iterator[Stack]:
    """The simulation stack with a sequencer of the test's own (tests/burnin/conftest.py: fixture ``stack``)."""
    var = tmp_path_factory.mktemp("burnin-stack")
    # the test runs its own sequencer (it kills and restarts it, and adds a second humidity sensor), on the
    # stack's time scale
    args = ("--node-red-port", str(free_port()), "--no-burnin", "--time-scale", f"{SCALE:g}")
    with sim_stack_launcher(var, *args, timeout=180, expect="Operator UI"):
        s = Stack(var)
        s.dcs.connect()
        s.dcs.watch("#", s.messages.append)
        s.dcs.wait_for("interlock/availability", lambda m: m.payload == b"online", timeout=60)
        sensor = WetBox(
            MqttSettings.from_config(
                {**s.mqtt, "username": "sensors", "password_file": str(var / "secrets" / "mqtt-sensors")}, env={}
            )
        )
        s.wetbox = sensor
        s.start_burnin()
        yield s
        sensor.stop()
        if s.proc is not None and s.proc.poll() is None:
            stop_process(s.proc, timeout=20)
        s.dcs.close()


class WetBox:
    """A second environment sensor in the box whose humidity the test sets (user ``sensors``, like a gateway)."""

    def __init__(self, settings: MqttSettings) -> None:
        self.humidity = 5.0
        self.client = DcsClient(settings, client_id="wetbox-sensor")
        self.client.connect()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            doc = {"temperature": 20.0, "humidity": self.humidity, "ts": time.time()}
            self.client.client.publish("env/wetbox", json.dumps(doc), qos=1, retain=True)
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()


def put_pv_when(stack: Stack, watch: str, above: float, pv: str, value: float) -> subprocess.Popen[str]:
    """Fault injection on the simulated crate (a separate process: libca reads its environment once):
    when ``watch`` exceeds ``above``, write ``value`` to ``pv``."""
    code = (
        "import time, epics\n"
        f"w = epics.PV({watch!r}); p = epics.PV({pv!r})\n"
        "w.wait_for_connection(10); p.wait_for_connection(10)\n"
        "deadline = time.time() + 600\n"
        f"while time.time() < deadline and (w.get() or 0) <= {above}:\n"
        "    time.sleep(0.05)\n"
        f"p.put({value}, wait=True)\n"
        "print('injected', w.get(), flush=True)\n"
    )
    env = {**os.environ, **loopback_ca_env(stack.ports["caen_ca"])}
    env.pop("EPICS_CA_SERVER_PORT")
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def commands_from_burnin(stack: Stack, since: float) -> list[str]:
    return [
        m.topic
        for m in list(stack.messages)
        if m.received >= since
        and "/cmd/" in m.topic
        and not m.topic.startswith("burnin/")
        and str(_json(m).get("id", "")).startswith("burnin-")
    ]


def _json(m: Message) -> dict:
    try:
        doc = json.loads(m.payload)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def telegraf_model() -> Any:
    """tests/gateway/gateway_telegraf.py (the Python model of telegraf.conf's mapping; Telegraf does not run here)."""
    path = REPO / "tests" / "gateway" / "gateway_telegraf.py"
    spec = importlib.util.spec_from_file_location("gateway_telegraf_model", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def started_at(stack: Stack, uid: str) -> float:
    return next(m.received for m in stack.messages if m.topic == "burnin/event" and _json(m).get("uid") == uid)
