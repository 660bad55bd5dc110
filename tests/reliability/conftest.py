"""Fixtures for the reliability campaign: one simulated stand (all services, all simulators) per test module."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trackerdcs.client import DcsClient
from trackerdcs_devstack.localbroker import LocalBroker

from .stand import Stand

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="module")
def watcher(broker: LocalBroker) -> Iterator[DcsClient]:
    """An operator client for the whole module (reads everything, may command)."""
    with DcsClient(broker.settings("operator")) as client:
        yield client


@pytest.fixture(scope="module")
def stand(broker: LocalBroker, watcher: DcsClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stand]:
    """caen, julabo and ph2acf services with their simulators, all connected."""
    s = Stand(broker, tmp_path_factory.mktemp("stand"))
    try:
        s.start(watcher)
        yield s
    finally:
        s.stop()


def record(name: str, figures: dict[str, Any]) -> Path:
    """Write the figures of one reliability test to tests/artifacts/reliability-<name>.json."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"reliability-{name}.json"
    path.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), **figures}, indent=1, default=str))
    return path
