"""Fixtures for the CAEN tests: a real simulated crate IOC and a real caen-fsm process on loopback.

The CA port is chosen once per session (pyepics reads EPICS_CA_* when libca starts, before any test runs);
the IOC and the service are fresh subprocesses per test, so every test starts from a crate that is off.

The crate serves its enum PVs with the manual's label order (``default``) or with every list reversed
(``reversed``): the service tests run against both, since IOCs in the field differ. caen-fsm holds the
interlock permit itself, so the ``interlock`` fixture publishes what the Node-RED interlock publishes
(retained ``interlock/status``, ``interlock/availability``) as the ``nodered`` account, through the broker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from trackerdcs.client import DcsClient
from trackerdcs_devstack.localbroker import LocalBroker, free_port
from trackerdcs_devstack.localca import loopback_ca_env
from trackerdcs_devstack.supervisor import read_until

CA_PORT = free_port()
CA_ENV = loopback_ca_env(CA_PORT)
os.environ.update(CA_ENV)  # before pyepics is imported anywhere in this process

BIN = Path(sys.executable).parent
SYSTEM = "teststand"

#: Small crate: 3 modules (LV slot 0, HV slot 12) + fast ramps so tests run in seconds.
CONFIG = {
    "system": SYSTEM,
    "channels": {
        "0": {"module": "M0", "lv": {"board": 0, "chan": 0}, "hv": {"board": 12, "chan": 0}},
        "1": {"module": "M1", "lv": {"board": 0, "chan": 1}, "hv": {"board": 12, "chan": 1}},
        "2": {"module": "M2", "lv": {"board": 0, "chan": 2}, "hv": {"board": 12, "chan": 2, "setV": 150.0}},
    },
    "global": {
        "lv": {"setV": 12.0, "maxI": 3.0, "tripTime": 0.3, "rampUpTime": 0.2, "rampDwnTime": 0.2},
        "hv": {
            "setV": 100.0,
            "maxI": 10.0,
            "rampUpSpeed": 200.0,
            "rampDwnSpeed": 200.0,
            "tripTime": 0.3,
            "tripMode": "Kill",
            "imRange": "High",
        },
    },
    "limits": {"lv": {"V0Set": 14.0}, "hv": {"V0Set": 600.0}, "channels": {"M0_hv": {"V0Set": 350.0}}},
    "deadbands": {"vmon": {"abs": 0.5}, "hv_vmon": {"abs": 0.5}, "lv_vmon": {"abs": 0.5}},
    "service": {"heartbeat_s": 30, "hv_safe_voltage": 5.0},
    "interlock": {"stale_s": 90},
}
#: Enum label lists the simulated crate is run with (caen-sim --enum-labels).
ENUM_VARIANTS = ("default", "reversed")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=8)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class SimCrate:
    """The caen-sim process (real EPICS IOC) with helpers to kill/restart it and inject faults."""

    def __init__(self, config_path: Path, log_path: Path, enum_labels: str = "default") -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.enum_labels = enum_labels
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, **CA_ENV}
        logf = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed right after
        self.proc = subprocess.Popen(
            [
                str(BIN / "caen-sim"),
                "--config",
                str(self.config_path),
                "--port",
                str(CA_PORT),
                "--interface",
                "127.0.0.1",
                "--tick",
                "0.02",
                "--enum-labels",
                self.enum_labels,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=logf,
            text=True,
        )
        logf.close()
        read_until(self.proc, "caen-sim ready", 20)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        _stop(self.proc)

    # -- direct CA access, as a person with caput in the lab would have. Low-level channels without monitors;
    # a channel that is not connected (an IOC of an earlier test, or restarted) is recreated, so it is searched
    # at once. (pyepics' clear_cache between IOCs raced callbacks and crashed the suite with SIGSEGV.)
    @staticmethod
    def _chid(name: str):
        from epics import ca

        ca.use_initial_context()
        chid = ca.create_channel(f"{SYSTEM}:{name}", connect=False, auto_cb=False)
        if ca.isConnected(chid):
            return chid
        ca.clear_channel(chid)
        chid = ca.create_channel(f"{SYSTEM}:{name}", connect=False, auto_cb=False)
        return chid if ca.connect_channel(chid, timeout=5) else None

    @classmethod
    def put(cls, name: str, value, wait: bool = True) -> None:
        from epics import ca

        chid = cls._chid(name)
        assert chid is not None, f"{name} not connected"
        assert ca.put(chid, value, wait=wait, timeout=5) == 1, name

    @classmethod
    def get(cls, name: str):
        from epics import ca

        chid = cls._chid(name)
        return None if chid is None else ca.get(chid, timeout=5)

    @classmethod
    def label(cls, name: str) -> str | None:
        """The label an enum PV reads (as the IOC names it)."""
        from epics import ca

        chid = cls._chid(name)
        if chid is None:
            return None
        labels, index = ca.get_enum_strings(chid), ca.get(chid, timeout=5)
        return None if labels is None or index is None else labels[int(index)]

    def is_on(self, name: str) -> bool:
        """Whether the Pw PV ``<slot>:<chan>`` reads On, whatever the IOC's label order."""
        return (self.label(f"{name}:Pw") or "").lower() == "on"


class InterlockStandIn:
    """Publishes what the Node-RED interlock publishes, as the ``nodered`` account: a retained
    ``interlock/status`` document and ``interlock/availability``."""

    def __init__(self, client: DcsClient) -> None:
        self.client = client

    def publish(self, state: str = "OK", reasons: dict[str, str] | None = None, ts: float | None = None) -> None:
        reasons = reasons or {}
        doc = {
            "state": state,
            "active": sorted(reasons),
            "conditions": sorted(reasons),
            "details": [{"reason": r, "message": r, "action": a, "since": time.time(), "present": True}
                        for r, a in sorted(reasons.items())],
            "lv_off_pending": False,
            "ts": time.time() if ts is None else ts,
        }  # fmt: skip
        self._send("interlock/status", json.dumps(doc))

    def ok(self) -> None:
        self.publish("OK")

    def trip(self, **reasons: str) -> None:
        """``trip(chiller_not_running="hv_off+lv_off")``: reasons latched with their actions."""
        self.publish("TRIPPED", reasons)

    def availability(self, payload: str) -> None:
        self._send("interlock/availability", payload)

    def clear(self) -> None:
        self._send("interlock/status", "")
        self._send("interlock/availability", "")

    def _send(self, topic: str, payload: str) -> None:
        info = self.client.client.publish(topic, payload.encode(), qos=1, retain=True)
        info.wait_for_publish(5)


class CaenProcess:
    """The caen-fsm service as a subprocess talking to the broker and the simulated crate."""

    def __init__(self, broker: LocalBroker, config_path: Path, log_path: Path) -> None:
        self.broker = broker
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, **CA_ENV, **self.broker.env("caen")}
        env["DCS_MQTT_CLIENT_ID"] = f"caen-test-{uuid.uuid4().hex[:8]}"
        logf = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed right after
        self.proc = subprocess.Popen(
            [str(BIN / "caen-fsm"), "--config", str(self.config_path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=logf,
        )
        logf.close()

    def stop(self) -> None:
        _stop(self.proc)

    def wait_ready(self, operator, started: float, state: str | None = "OFF", timeout: float = 20) -> None:
        """Wait for this process's own availability and a status computed after ``started``."""
        operator.wait_for(
            "caen/availability",
            lambda m: (m.payload == b"online" and not m.retain) or (m.received >= started and m.payload == b"online"),
            timeout=timeout,
        )
        operator.wait_for(
            "caen/status",
            lambda m: m.json()["ts"] >= started and m.json()["connected"] and state in (None, m.json()["state"]),
            timeout=timeout,
        )

    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
def config_overrides() -> dict:
    """Top-level keys replacing those of CONFIG for one test (override the fixture in the test module)."""
    return {}


@pytest.fixture
def caen_config(tmp_path: Path, config_overrides: dict) -> Path:
    path = tmp_path / "caen.yml"
    path.write_text(yaml.safe_dump({**CONFIG, **config_overrides}))
    return path


@pytest.fixture(params=ENUM_VARIANTS)
def enum_labels(request: pytest.FixtureRequest) -> str:
    """The crate's enum label lists: the manual's order, then every list reversed."""
    return request.param


@pytest.fixture
def crate(tmp_path: Path, caen_config: Path, enum_labels: str) -> Iterator[SimCrate]:
    sim = SimCrate(caen_config, tmp_path / "caen-sim.log", enum_labels)
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def interlock(broker: LocalBroker) -> Iterator[InterlockStandIn]:
    """The interlock's published state, OK and online to start with; cleared (retained messages deleted) after."""
    with DcsClient(broker.settings("nodered")) as client:
        stand_in = InterlockStandIn(client)
        stand_in.availability("online")
        stand_in.ok()
        yield stand_in
        stand_in.clear()


@pytest.fixture
def caen(
    broker: LocalBroker, crate: SimCrate, caen_config: Path, tmp_path: Path, operator, interlock
) -> Iterator[CaenProcess]:
    """caen-fsm running against ``crate``; returns once its system status says connected and OFF."""
    svc = CaenProcess(broker, caen_config, tmp_path / "caen-fsm.log")
    started = time.time()
    svc.start()
    try:
        svc.wait_ready(operator, started)
        yield svc
    finally:
        svc.stop()
