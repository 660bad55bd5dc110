"""The containers' liveness probe for the trackerdcs services (``python -m trackerdcs.probe <svc>``):
what podman/Kubernetes restart a service on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trackerdcs.probe import main as probe_main
from trackerdcs.probe import probe
from trackerdcs.service import Service
from trackerdcs_devstack.localbroker import LocalBroker, free_port


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A broker of its own: these tests leave caen/availability retained as offline."""
    work = tmp_path_factory.mktemp("probe-broker")
    with LocalBroker(work, work / "secrets") as broker:
        yield broker


def as_container(monkeypatch: pytest.MonkeyPatch, broker: LocalBroker, user: str) -> None:
    """The probe reads the container's DCS_MQTT_* environment, as the service does."""
    for key, value in broker.env(user).items():
        monkeypatch.setenv(key, value)


def test_a_running_service_is_alive(own_broker: LocalBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = Service("caen", own_broker.settings("caen", client_id="probe-test-caen"), health_interval_s=1)
    svc.start()
    try:
        assert svc.wait_connected(10)
        as_container(monkeypatch, own_broker, "caen")
        time.sleep(0.5)
        alive, why = probe("caen", timeout=5)
        assert alive, why
        assert why.startswith("online")
        assert probe_main(["caen"]) == 0
        stale, why = probe("caen", timeout=5, max_health_age=0.0)  # a hung process stops publishing health
        assert not stale and "health is" in why
    finally:
        svc.stop()


def test_a_stopped_service_is_reported_dead(own_broker: LocalBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = Service("caen", own_broker.settings("caen", client_id="probe-test-caen"), health_interval_s=1)
    svc.start()
    assert svc.wait_connected(10)
    svc.stop()  # availability -> offline (retained)
    as_container(monkeypatch, own_broker, "caen")
    alive, why = probe("caen", timeout=3)
    assert not alive
    assert "offline" in why
    assert probe_main(["caen", "--timeout", "3"]) == 1


def test_an_unreachable_broker_is_not_blamed_on_the_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Restarting caen-fsm because Mosquitto restarts would only add churn."""
    monkeypatch.setenv("DCS_MQTT_HOST", "127.0.0.1")
    monkeypatch.setenv("DCS_MQTT_PORT", str(free_port()))
    monkeypatch.setenv("DCS_MQTT_USERNAME", "caen")
    monkeypatch.setenv("DCS_MQTT_PASSWORD", "x")
    alive, why = probe("caen", timeout=2)
    assert alive and "not blaming" in why


def test_the_probe_needs_only_the_runtime_package() -> None:
    """The liveness probe runs in every service image, which carries the runtime package only: importing it must not
    pull in the deployment or development tooling (manifest renderer, local broker)."""
    import subprocess
    import sys

    code = (
        "import sys, trackerdcs.probe; "
        "bad = sorted(m for m in sys.modules if m.startswith(('trackerdcs_ops', 'trackerdcs_devstack')));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"trackerdcs.probe imports tooling: {done.stdout}{done.stderr}"
