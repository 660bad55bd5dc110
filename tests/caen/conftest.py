"""Fixtures for the CAEN tests: a real simulated crate IOC and a real caen-fsm process on loopback.

The CA port is chosen once per session (pyepics reads EPICS_CA_* when libca starts, before any test runs);
the IOC and the service are fresh subprocesses per test, so every test starts from a crate that is off.
"""

from __future__ import annotations

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

from trackerdcs.localbroker import LocalBroker, free_port
from trackerdcs.localca import loopback_ca_env
from trackerdcs.supervisor import read_until

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
}


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

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if "epics" in sys.modules:  # forget channels to a previous IOC: connect afresh to this one
            sys.modules["epics"].ca.clear_cache()
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

    # -- direct CA access, as a person with caput in the lab would have
    @staticmethod
    def put(name: str, value, wait: bool = True) -> None:
        import epics

        assert epics.caput(f"{SYSTEM}:{name}", value, wait=wait, timeout=5) == 1, name

    @staticmethod
    def get(name: str, **kw):
        import epics

        return epics.caget(f"{SYSTEM}:{name}", timeout=5, use_monitor=False, **kw)


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
def caen_config(tmp_path: Path) -> Path:
    path = tmp_path / "caen.yml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


@pytest.fixture
def crate(tmp_path: Path, caen_config: Path) -> Iterator[SimCrate]:
    sim = SimCrate(caen_config, tmp_path / "caen-sim.log")
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def caen(broker: LocalBroker, crate: SimCrate, caen_config: Path, tmp_path: Path, operator) -> Iterator[CaenProcess]:
    """caen-fsm running against ``crate``; returns once its system status says connected and OFF."""
    svc = CaenProcess(broker, caen_config, tmp_path / "caen-fsm.log")
    started = time.time()
    svc.start()
    try:
        svc.wait_ready(operator, started)
        yield svc
    finally:
        svc.stop()
