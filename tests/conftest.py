"""Fixtures shared by every test: a real Mosquitto on loopback with authentication and the ACL on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from trackerdcs.client import DcsClient
from trackerdcs.localbroker import LocalBroker

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A real Mosquitto on a free 127.0.0.1 port, passwords generated into a temporary secrets folder.

    One per test module, so retained messages of one module (an interlock left latched, say) never leak
    into another."""
    work = tmp_path_factory.mktemp("mosquitto")
    instance = LocalBroker(work, work / "secrets")
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def operator(broker: LocalBroker) -> Iterator[DcsClient]:
    """A connected client logged in as the ``operator`` user (may command every service)."""
    with DcsClient(broker.settings("operator")) as client:
        yield client


@pytest.fixture
def monitor(broker: LocalBroker) -> Iterator[DcsClient]:
    """A connected client logged in as the read-only ``monitor`` user."""
    with DcsClient(broker.settings("monitor")) as client:
        yield client


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Folder for files tests leave for people to look at (screenshots, captured payloads)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def pytest_report_header(config: pytest.Config) -> list[str]:
    if os.environ.get("MONGODB_URI"):
        return ["MongoDB: real server (MONGODB_URI)"]
    return ["MongoDB stand-in: mongomock (no MongoDB server on this machine; set MONGODB_URI to use one)"]
