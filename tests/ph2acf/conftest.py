"""Fixtures for the ph2acf bridge tests: a MongoDB (real when MONGODB_URI is set, else the mongomock stand-in),
Ph2_ACF working folders with hardware descriptions, fast simulator settings."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from ph2acf_bridge.store import MongoStore
from ph2acf_sim.detector import example_xml

MONGODB_URI = os.environ.get("MONGODB_URI")
MONGO_KIND = "mongodb" if MONGODB_URI else "mongomock"
BIN = Path(sys.executable).parent

#: simulator speed-up for tests: 1.2 s runs on a small pixel matrix
FAST_SIM = {"PH2ACF_SIM_DURATION": "1.2", "PH2ACF_SIM_MATRIX": "48x40", "PH2ACF_SIM_STEPS": "6"}


def pytest_report_header(config: pytest.Config) -> list[str]:
    if MONGODB_URI:
        return ["ph2acf: MongoDB: real server from MONGODB_URI"]
    return ["ph2acf: MongoDB stand-in: mongomock (set MONGODB_URI to test against a real MongoDB)"]


@pytest.fixture(params=[MONGO_KIND])
def mongo(request: pytest.FixtureRequest) -> Iterator[MongoStore]:
    """A MongoStore on a fresh database: the real server if MONGODB_URI is set, otherwise mongomock (named in the
    test id, e.g. ``test_x[mongomock]``)."""
    database = f"ph2acf_test_{uuid.uuid4().hex[:8]}"
    if MONGODB_URI:
        store = MongoStore.from_uri(MONGODB_URI, database, gridfs_threshold=100_000)
    else:
        store = MongoStore.from_uri("mongomock://", database, gridfs_threshold=100_000)
    yield store
    if MONGODB_URI:
        client = store.client_factory()
        client.drop_database(database)
        client.close()


def unreachable_mongo(database: str = "ph2acf_down") -> MongoStore:
    """A pymongo store pointed at a closed loopback port: every operation fails fast (an outage)."""
    from trackerdcs_devstack.localbroker import free_port

    return MongoStore.from_uri(f"mongodb://127.0.0.1:{free_port()}/", database, timeout_ms=300)


@pytest.fixture
def it_workdir(tmp_path: Path) -> Path:
    """A Ph2_ACF inner-tracker working folder with CMSIT.xml (one hybrid, two chips)."""
    work = tmp_path / "ph2acf-it"
    work.mkdir()
    (work / "CMSIT.xml").write_text(example_xml("it", chips=2))
    return work


@pytest.fixture
def ot_workdir(tmp_path: Path) -> Path:
    """A Ph2_ACF outer-tracker working folder with OT.xml (two hybrids of 8 CBCs)."""
    work = tmp_path / "ph2acf-ot"
    work.mkdir()
    (work / "OT.xml").write_text(example_xml("ot", hybrids=2, chips=8))
    return work


def sim_env(**extra: str) -> dict[str, str]:
    """Environment for simulator subprocesses: fast runs, PH2ACF_BASE_DIR as Ph2_ACF's setup.sh sets it, plus
    ``extra``."""
    return {**os.environ, **FAST_SIM, "PH2ACF_BASE_DIR": "/opt/Ph2_ACF", **extra}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which MongoDB the ph2acf tests used (the header hook only runs for initial conftests)."""
    line = pytest_report_header(terminalreporter.config)[0]
    terminalreporter.write_line(line)


from .test_bridge import make_bridge, sim_server  # noqa: E402, F401 (fixtures shared by the bridge test modules)
