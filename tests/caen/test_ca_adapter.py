"""The CA adapter's worker hands every queued update to the handler exactly once, whatever the batch size.

Regression: the worker fetched the next queued item *before* checking the batch limit and dropped it when the
limit was reached, so one update in every ``max_batch + 1`` was lost whenever the queue held more than a batch
(small batches, or a backlog after an IOC restart). A lost initial ``Status`` value left a channel, and so its
module and the whole crate, DISCONNECTED for good, although every PV was connected.
"""

from __future__ import annotations

import threading
import time

import pytest
import yaml
from caen_fsm import ca_adapter
from caen_fsm.ca_adapter import CaAdapter
from caen_fsm.config import parse_config
from caen_fsm.fsm import Plant
from caen_fsm.states import ModuleState, SystemState


class _Collector:
    def __init__(self) -> None:
        self.values: list[tuple[str, object]] = []
        self.conns: list[tuple[str, bool]] = []
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, values, conns) -> None:
        with self.lock:
            self.values += values
            self.conns += conns
            self.batches.append(len(values) + len(conns))


@pytest.mark.parametrize("max_batch", [1, 2, 7, 64, 50_000])
def test_worker_delivers_every_queued_update_once_in_order(monkeypatch, max_batch):
    monkeypatch.setattr(ca_adapter.ca, "use_initial_context", lambda: None)
    monkeypatch.setattr(ca_adapter.ca, "flush_io", lambda: None)
    got = _Collector()
    adapter = CaAdapter([f"PV{i}" for i in range(50)], got, idle_s=0.05, max_batch=max_batch, probe_s=0)
    # everything queued before the worker starts: the worst case (a backlog larger than one batch)
    expected_conns = [(f"PV{i}", True) for i in range(50)]
    expected_values = [(f"PV{i % 50}", i) for i in range(1000)]
    for name, conn in expected_conns:
        adapter._on_connection(pvname=name, conn=conn)
    for name, value in expected_values:
        adapter._on_value(pvname=name, value=value)
    thread = threading.Thread(target=adapter._run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(got.values) + len(got.conns) < 1050:
        time.sleep(0.01)
    connected = adapter.connected_count
    adapter.stop()
    thread.join(timeout=5)
    assert got.conns == expected_conns
    assert got.values == expected_values
    assert connected == 50
    assert max(got.batches) <= max_batch


def test_small_batches_against_a_real_ioc_bring_every_module_out_of_disconnected(crate, caen_config):
    """The start-up the benchmark saw, in process: a real IOC, the plant fed in batches of at most 5 updates."""
    config = parse_config(yaml.safe_load(caen_config.read_text()))
    plant = Plant(config)
    lock = threading.Lock()
    seen: set[str] = set()

    def handler(values, conns) -> None:
        with lock:
            plant.apply(values, conns, now=time.monotonic())
            seen.update(name for name, _ in values)

    adapter = CaAdapter(plant.pv_names, handler, idle_s=0.05, max_batch=5, ctrl_pvs=plant.egu_pvs)
    adapter.start()
    try:
        assert adapter.wait_connected(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with lock:
                if plant.system.state == SystemState.OFF and len(seen) == len(adapter.pvnames):
                    break
            time.sleep(0.05)
        with lock:
            missing = sorted(set(adapter.pvnames) - seen)
            states = {name: m.state for name, m in plant.modules.items()}
            assert not missing, f"no value ever delivered for {missing}"
            assert plant.connected
            assert states == dict.fromkeys(plant.modules, ModuleState.OFF)
            assert plant.system.state == SystemState.OFF
    finally:
        adapter.stop()


def test_while_pvs_are_lost_one_is_recreated_each_second_and_its_answer_recreates_all(monkeypatch):
    """Issue 18.6, the adapter's part: libca's own search backs off to a minute; the probe does not."""
    created: list[str] = []
    cleared: list[object] = []
    monkeypatch.setattr(ca_adapter.ca, "field_type", lambda chid: 0)  # every channel connected
    monkeypatch.setattr(ca_adapter.ca, "use_initial_context", lambda: None)
    monkeypatch.setattr(ca_adapter.ca, "flush_io", lambda: None)
    monkeypatch.setattr(ca_adapter.ca, "create_channel", lambda name, **kw: created.append(name) or f"chid-{name}")
    monkeypatch.setattr(ca_adapter.ca, "clear_channel", cleared.append)
    monkeypatch.setattr(CaAdapter, "_subscribe", lambda self, chid: ("sub", chid))
    adapter = CaAdapter(["A", "B", "C"], lambda values, conns: None, probe_s=1.0)
    adapter._chids = {n: f"chid-{n}" for n in adapter.pvnames}
    for name in ("A", "B", "C"):
        adapter._connection_changed(name, True)
    for name in ("A", "B", "C"):
        adapter._connection_changed(name, False)  # the IOC went away
    t0 = adapter._last_change
    adapter._probe_tick(t0 + 0.5)
    assert created == []  # connection events within the last second: libca may be reconnecting by itself
    adapter._probe_tick(t0 + 1.0)
    adapter._probe_tick(t0 + 1.5)  # not due yet
    adapter._probe_tick(t0 + 2.0)
    assert len(created) == 2 and created[0] != created[1]  # one PV per second, rotating
    probe = adapter._probe
    created.clear()
    adapter._connection_changed(probe, True)  # the IOC answers the probe
    assert sorted(created) == sorted({"A", "B", "C"} - {probe})  # every other lost PV searched afresh at once
    for name in created:
        adapter._connection_changed(name, True)
    for name in ("A", "B", "C"):
        adapter._awaiting.pop(name)  # their first values arrived (the worker does this for every value)
    created.clear()
    adapter._probe_tick(t0 + 10.0)
    assert created == [] and adapter.probe_hits == 1  # nothing lost: no probe


def test_a_connected_pv_that_never_sends_a_value_is_recreated(monkeypatch):
    """Whatever left a PV connected without a subscription (a race, a failed subscribe), its channel would stay
    unknown for good: after silent_s without a value it is dropped (for the plant too) and searched afresh."""
    created: list[str] = []
    monkeypatch.setattr(ca_adapter.ca, "field_type", lambda chid: 0)  # every channel connected
    monkeypatch.setattr(ca_adapter.ca, "use_initial_context", lambda: None)
    monkeypatch.setattr(ca_adapter.ca, "flush_io", lambda: None)
    monkeypatch.setattr(ca_adapter.ca, "create_channel", lambda name, **kw: created.append(name) or 7)
    monkeypatch.setattr(ca_adapter.ca, "clear_channel", lambda chid: None)
    monkeypatch.setattr(CaAdapter, "_subscribe", lambda self, chid: chid)
    adapter = CaAdapter(["A", "B"], lambda values, conns: None, probe_s=1.0, silent_s=5.0)
    adapter._chids = {"A": 1, "B": 2}
    adapter._connection_changed("A", True)
    adapter._connection_changed("B", True)
    adapter._awaiting.pop("B")  # B sent its value, A did not
    t0 = adapter._last_change
    adapter._probe_tick(t0 + 4.0)
    assert created == []
    adapter._probe_tick(t0 + 6.0)
    assert created == ["A"]
    assert adapter._queue.get_nowait() == ("c", "A", (False, None))  # the plant is told A is gone


def test_a_connection_event_of_a_channel_recreated_since_is_ignored(monkeypatch):
    """Found by the outage test: an 'up' event queued by the old channel, handled after the probe had
    recreated the channel, subscribed the new (unconnected) channel and left the PV without values for good."""
    ids = iter(range(100, 200))
    monkeypatch.setattr(ca_adapter.ca, "field_type", lambda chid: 0)  # every channel connected
    monkeypatch.setattr(ca_adapter.ca, "use_initial_context", lambda: None)
    monkeypatch.setattr(ca_adapter.ca, "flush_io", lambda: None)
    monkeypatch.setattr(ca_adapter.ca, "create_channel", lambda name, **kw: next(ids))
    monkeypatch.setattr(ca_adapter.ca, "clear_channel", lambda chid: None)
    subscribed: list[int] = []
    monkeypatch.setattr(CaAdapter, "_subscribe", lambda self, chid: subscribed.append(chid) or chid)
    adapter = CaAdapter(["A"], lambda values, conns: None, probe_s=0)
    adapter._chids = {"A": 1}
    with adapter._lock:
        adapter._recreate_locked("A")  # the probe: channel 1 cleared, channel 100 created
    assert adapter._connection_changed("A", True, chid=1) is False  # the old channel's event
    assert not adapter.is_connected("A") and subscribed == []
    assert adapter._connection_changed("A", True, chid=100) is True
    assert adapter.is_connected("A") and subscribed == [100]


def test_an_up_event_for_a_channel_that_is_down_by_now_is_ignored_and_subscribes_nothing(monkeypatch):
    """Seen in the pod (caen-fsm and the crate starting together): an 'up' event was handled when its channel was
    no longer connected (libca had reused the cleared channel's id for the recreated one); the subscription
    failed with 'The data type specifed is invalid' and killed the worker thread: caen stayed DISCONNECTED until
    restarted. The channel's own state decides now; its next 'up' event connects it."""
    monkeypatch.setattr(ca_adapter.ca, "use_initial_context", lambda: None)
    monkeypatch.setattr(ca_adapter.ca, "flush_io", lambda: None)
    up: set[int] = set()
    monkeypatch.setattr(ca_adapter.ca, "field_type", lambda chid: 0 if chid in up else -1)  # -1: TYPENOTCONN
    subscribed: list[int] = []

    def subscribe(self, chid):
        if chid not in up:
            raise ca_adapter.ca.CASeverityException("create_subscription", "The data type specifed is invalid")
        subscribed.append(chid)
        return chid

    monkeypatch.setattr(CaAdapter, "_subscribe", subscribe)
    adapter = CaAdapter(["A"], lambda values, conns: None, probe_s=0)
    adapter._chids = {"A": 1}
    assert adapter._connection_changed("A", True, chid=1) is False
    assert not adapter.is_connected("A") and subscribed == []
    up.add(1)  # the channel connects: its event arrives
    assert adapter._connection_changed("A", True, chid=1) is True
    assert adapter.is_connected("A") and subscribed == [1]


def test_a_failing_subscription_never_stops_the_worker(monkeypatch):
    """Whatever a subscription raises, the worker goes on delivering every other update; the PV without values
    is recreated by the silent-PV check."""
    monkeypatch.setattr(ca_adapter.ca, "use_initial_context", lambda: None)
    monkeypatch.setattr(ca_adapter.ca, "flush_io", lambda: None)
    monkeypatch.setattr(ca_adapter.ca, "field_type", lambda chid: 0)

    def subscribe(self, chid):
        if chid == 1:
            raise ca_adapter.ca.CASeverityException("create_subscription", "The data type specifed is invalid")
        return chid

    monkeypatch.setattr(CaAdapter, "_subscribe", subscribe)
    got = _Collector()
    adapter = CaAdapter(["A", "B"], got, idle_s=0.05, probe_s=0)
    adapter._chids = {"A": 1, "B": 2}
    adapter._on_connection(pvname="A", conn=True, chid=1)
    adapter._on_connection(pvname="B", conn=True, chid=2)
    adapter._on_value(pvname="B", value=5.0)
    thread = threading.Thread(target=adapter._run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not got.values:
        time.sleep(0.01)
    alive, b_connected = thread.is_alive(), adapter.is_connected("B")
    adapter.stop()
    thread.join(timeout=5)
    assert alive and got.values == [("B", 5.0)] and b_connected
