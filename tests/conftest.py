"""Fixtures shared by every test: a real Mosquitto on loopback with authentication and the ACL on."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from trackerdcs.client import DcsClient
from trackerdcs_devstack.cipolicy import pytest_runtest_makereport  # noqa: F401 - the hook: on CI a skip is a failure
from trackerdcs_devstack.localbroker import LocalBroker, free_port, running_in_ci
from trackerdcs_devstack.supervisor import read_lines_until, stop_process

ARTIFACTS = Path(__file__).parent / "artifacts"
DCS_SIM = Path(sys.executable).with_name("dcs-sim")


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


@pytest.fixture(scope="session")
def sim_stack_launcher() -> Callable[..., Any]:
    """``with sim_stack_launcher(var, *args, timeout=s, expect=text) as (proc, banner):`` runs the whole
    simulation stack (``dcs-sim``, runs of 3 s) on free ports, waits for its banner and stops it on exit."""

    @contextlib.contextmanager
    def launch(var: Path, *args: str, timeout: float, expect: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
        argv = [str(DCS_SIM), "--var", str(var), "--mqtt-port", str(free_port()), "--run-seconds", "3", *args]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            try:
                banner = "".join(read_lines_until(proc, "Ctrl-C stops the stack", timeout, drain=True))
            except RuntimeError as exc:
                pytest.fail(f"dcs-sim did not come up: {exc}")
            if expect not in banner:
                pytest.fail(f"dcs-sim did not come up ({expect!r} missing):\n{banner}")
            yield proc, banner
        finally:
            stop_process(proc, timeout=60)

    return launch


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = ["CI=true: a skipped test counts as a failure (trackerdcs_devstack.cipolicy)"] if running_in_ci() else []
    if os.environ.get("MONGODB_URI"):
        return [*lines, "MongoDB: real server (MONGODB_URI)"]
    return [*lines, "MongoDB stand-in: mongomock (no MongoDB server on this machine; set MONGODB_URI to use one)"]


#: The fast lane (``scripts/test-fast.sh``, marker ``fast``): specifications of the pure cores (protocols, status
#: words, state machines, decisions, recipes, models), fed bytes and values. They start no process and open no
#: socket, port or device, so they run in well under a minute. A new file of that kind belongs on this list.
FAST_FILES = {
    "burnin/test_engine.py", "burnin/test_ivplot.py", "burnin/test_overview.py", "burnin/test_recipe.py",
    "burnin/test_sensor_physics.py",
    "burnin/test_store.py",
    "caen/test_config.py", "caen/test_fsm.py", "caen/test_permit.py", "caen/test_sim_model.py",
    "caen/test_status_bits.py",
    "foundation/test_command_parsing.py", "foundation/test_command_tables.py", "foundation/test_config.py",
    "foundation/test_deadband.py",
    "julabo/test_fsm.py", "julabo/test_protocol.py", "julabo/test_safety_core.py", "julabo/test_simulator_engine.py",
    "ph2acf/test_conditions.py", "ph2acf/test_framing.py", "ph2acf/test_logparse.py", "ph2acf/test_settings.py",
    "ph2acf/test_summary.py",
}  # fmt: skip


#: The files with the most worker time in the parallel part (CI --durations, 2026-12-01), longest first. They are
#: handed out first (longest processing time first), so that the parallel part does not end with one worker
#: still busy with a long file picked up late while the others are idle.
LONG_FILES = (
    "reliability/test_fuzz.py", "julabo/test_safety_at_the_device.py", "burnin/test_stack_faults.py",
    "caen/test_reconnect_after_outage.py", "burnin/test_stack_runs.py", "gateway/test_operator_ui.py",
    "julabo/test_service_faults.py", "stack/test_readme_walkthrough.py", "burnin/test_ui_page.py",
    "reliability/test_broker_kill.py",
)  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    missing = [name for name in LONG_FILES if not (tests / name).is_file()]
    if missing:  # a renamed file would silently lose its place
        raise pytest.UsageError(f"tests/conftest.py LONG_FILES names files that do not exist: {missing}")
    for item in items:
        if item.path.relative_to(tests).as_posix() in FAST_FILES:
            item.add_marker(pytest.mark.fast)
    # a stable sort: within a file, and among the other files, the collection order stays
    items.sort(key=lambda item: rank.get(item.path.relative_to(tests).as_posix(), len(rank)))
