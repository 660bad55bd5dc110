"""Fixtures for the Julabo tests: the simulator as a real process, the service against it."""

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
from julabo_sim import control_client

from trackerdcs.client import DcsClient
from trackerdcs.localbroker import LocalBroker
from trackerdcs.supervisor import read_until

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
