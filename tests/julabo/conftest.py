"""Fixtures for the Julabo tests: the simulator as a real process, the service against it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from julabo_sim import control_client

from trackerdcs.client import DcsClient, Message
from trackerdcs_devstack.localbroker import LocalBroker
from trackerdcs_devstack.supervisor import read_until

from .service_config import julabo_config

BIN = Path(sys.executable).parent


class SimProcess:
    """A running ``julabo-sim`` with its endpoints and a control-port helper."""

    def __init__(self, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "julabo-sim"), "--seed", "7", "--log-level", "WARNING", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            line = read_until(self.proc, "READY ", timeout=15)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"julabo-sim did not start: {exc}") from None
        self.endpoints = json.loads(line[6:])

    @property
    def tcp_url(self) -> str:
        return f"socket://127.0.0.1:{self.endpoints['tcp_port']}"

    @property
    def pty(self) -> str:
        return str(self.endpoints["pty"])

    def control(self, command: str) -> str:
        answer = control_client.send(self.endpoints["control_port"], command)
        if answer.startswith("ERR"):
            raise AssertionError(f"simulator refused {command!r}: {answer}")
        return answer

    def state(self) -> dict:
        return json.loads(self.control("state"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()


# The simulator as the manual describes the device, and with the pacing jitter an independent device showed
# (it finishes reading a line up to 25 ms after it arrived, so a client keeping exactly 250 ms loses replies).
SIM_MODES = {"default": (), "jittery": ("--jitter", "0.025")}


@pytest.fixture(params=sorted(SIM_MODES))
def sim_mode(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """Extra ``julabo-sim`` arguments: tests taking this fixture run against both simulator behaviours."""
    return SIM_MODES[request.param]


@pytest.fixture
def make_sim() -> Iterator:
    sims: list[SimProcess] = []

    def make(*extra: str) -> SimProcess:
        sim = SimProcess(*extra)
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        sim.stop()


@pytest.fixture
def make_app(broker: LocalBroker) -> Iterator:
    """Start a JulaboApp (in this process) against a simulator; stopped at teardown."""
    from julabo_fsm.app import JulaboApp, JulaboConfig

    apps = []

    def make(connection: str, **overrides: object):
        cfg = JulaboConfig.from_config(julabo_config(connection, **overrides))
        started = time.time()
        app = JulaboApp(cfg, broker.settings("julabo", client_id=f"julabo-test-{uuid.uuid4().hex[:8]}"))
        app.started = started
        app.start()
        apps.append(app)
        assert app.service.wait_connected(10)
        return app

    yield make
    for app in apps:
        app.stop()


def wait_status(client: DcsClient, predicate, timeout: float = 10.0, since: float = 0.0) -> dict:
    """The first julabo/status document (stamped at or after ``since``) for which ``predicate`` holds."""
    return client.wait_for(
        "julabo/status", lambda m: bool(m.payload) and (d := m.json())["ts"] >= since and predicate(d), timeout
    ).json()


def wait_event(client: DcsClient, kind: str, since: float, timeout: float = 10.0) -> dict:
    """The first julabo/event of ``kind`` published after ``since``."""
    return client.wait_for(
        "julabo/event", lambda m: (d := m.json())["kind"] == kind and d["ts"] >= since, timeout
    ).json()


def now() -> float:
    return time.time()


class Recorder:
    """Every message on a topic pattern, in arrival order, with the local arrival time."""

    def __init__(self, client: DcsClient, pattern: str) -> None:
        self.items: list[tuple[float, dict]] = []
        self._lock = threading.Lock()
        client.watch(pattern, self._add)

    def _add(self, message: Message) -> None:
        if message.payload:
            with self._lock:
                self.items.append((time.time(), message.json()))

    def docs(self, since: float = 0.0) -> list[dict]:
        with self._lock:
            return [d for t, d in self.items if t >= since]

    def events(self, kind: str, since: float = 0.0) -> list[dict]:
        return [d for d in self.docs(since) if d.get("kind") == kind]

    def wait(self, kind: str, since: float, timeout: float = 10.0) -> dict:
        """The first event of ``kind`` that arrived at or after ``since``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(kind, since)
            if found:
                return found[0]
            time.sleep(0.02)
        raise TimeoutError(f"no {kind} event within {timeout} s; seen: {[d.get('kind') for d in self.docs(since)]}")
