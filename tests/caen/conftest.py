"""Fixtures for the CAEN tests: a real simulated crate IOC and a real caen-fsm process on loopback.

The CA port is chosen once per session (pyepics reads EPICS_CA_* when libca starts, before any test runs);
the IOC and the service are fresh subprocesses per test, so every test starts from a crate that is off.

The crate is presented as each shipped IOC flavour presents it (caen-sim --flavour: other PV names, Status as a
word, one PV per bit or a highest-bit enum, other labels, separate read-backs, no crate clear, a negative board),
and the service runs with the matching ``flavour:``; the default flavour also with every enum list reversed.
A new flavour is one YAML file in caen_fsm/flavours plus one entry in :data:`IOC_CASES` (and its presentation
in caen_sim/presentations.py). Tests address PVs in the default layout (``"12:001:V0Set"``, ``"SIM:..."``);
:class:`SimCrate` translates to the flavour's names and reads enum values as the manual's words. caen-fsm holds the
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
#: The shipped flavours (caen_fsm/flavours/*.yml) as (flavour, enum label variant) cases of the crate.
IOC_CASES = (
    ("trackerdcs", "default"),
    ("trackerdcs", "reversed"),
    ("halla", "default"),
    ("cls-hvcaenx527", "default"),
    ("slac-caenhvasyn", "reversed"),
    ("jlab-clas12", "default"),
)
FLAVOURS = tuple(dict.fromkeys(f for f, _ in IOC_CASES))
#: Boards presented (and configured) with negative polarity, per flavour: halla's HV board takes negative V0Set.
NEGATIVE_SLOTS = {"halla": (12,)}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test using the crate against every flavour (``@pytest.mark.flavours(...)`` narrows the list);
    a test that parametrises ``enum_labels`` itself gets every flavour with each of its label lists."""
    if "flavour" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("flavours")
    names = marker.args if marker else FLAVOURS
    own = {m.args[0] for m in metafunc.definition.iter_markers("parametrize")}
    if "enum_labels" in own:
        metafunc.parametrize("flavour", names, indirect=False)
    else:
        cases = [c for c in IOC_CASES if c[0] in names]
        metafunc.parametrize(("flavour", "enum_labels"), cases, ids=[f"{f}-{e}" for f, e in cases])


def flavour_config(flavour: str) -> object:
    """The config's ``flavour:`` for a case: the shipped name, or the site's sign convention on top of it."""
    if flavour in NEGATIVE_SLOTS:
        return {"base": flavour, "sign": {"negative_slots": list(NEGATIVE_SLOTS[flavour])}}
    return flavour


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

    def __init__(
        self, config_path: Path, log_path: Path, enum_labels: str = "default", flavour: str = "trackerdcs"
    ) -> None:
        from caen_sim.presentations import PRESENTATIONS

        self.config_path = config_path
        self.log_path = log_path
        self.enum_labels = enum_labels
        self.flavour = flavour
        self.look = PRESENTATIONS[flavour]
        self.negative_slots = NEGATIVE_SLOTS.get(flavour, ())
        self.proc: subprocess.Popen | None = None

    @property
    def has_clear(self) -> bool:
        """Whether this IOC has a crate-level clear."""
        return self.look.crate_clear is not None

    def has(self, param: str) -> bool:
        """Whether this IOC has the parameter ``param``."""
        return param not in self.look.absent

    def pv(self, name: str, write: bool = False) -> str:
        """The flavour's PV for ``"SS:CCC:Param"`` (read, or the one written) or ``"SIM:..."``."""
        from caen_sim.presentations import READ_ONLY

        if name.startswith("SIM:"):
            return f"{SYSTEM}:{name}"
        slot, ch, param = name.split(":")
        if write:
            return self.look.write_name(SYSTEM, int(slot), int(ch), param)
        return self.look.read_name(SYSTEM, int(slot), int(ch), param, param not in READ_ONLY)

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
                "--flavour",
                self.flavour,
                "--negative-slots",
                ",".join(str(s) for s in self.negative_slots),
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
    def _chid(pvname: str):
        from epics import ca

        ca.use_initial_context()
        chid = ca.create_channel(pvname, connect=False, auto_cb=False)
        if ca.isConnected(chid):
            return chid
        ca.clear_channel(chid)
        chid = ca.create_channel(pvname, connect=False, auto_cb=False)
        return chid if ca.connect_channel(chid, timeout=5) else None

    def put(self, name: str, value, wait: bool = True) -> None:
        from epics import ca

        chid = self._chid(self.pv(name, write=True))
        assert chid is not None, f"{name} not connected"
        assert ca.put(chid, value, wait=wait, timeout=5) == 1, name

    def get(self, name: str):
        """A number as the crate means it: a negative board's V0Set/VMon as their magnitude."""
        from epics import ca

        chid = self._chid(self.pv(name))
        value = None if chid is None else ca.get(chid, timeout=5)
        if value is not None and not name.startswith("SIM:") and int(name.split(":")[0]) in self.negative_slots:
            return abs(value)
        return value

    def raw_label(self, name: str) -> str | None:
        """The label an enum PV reads, as the IOC spells it."""
        from epics import ca

        chid = self._chid(self.pv(name))
        if chid is None:
            return None
        labels, index = ca.get_enum_strings(chid), ca.get(chid, timeout=5)
        return None if labels is None or index is None else labels[int(index)]

    def label(self, name: str) -> str | None:
        """The manual's word (Off/On, Kill/Ramp, High/Low) an enum PV reads, whatever this IOC's spelling."""
        from caen_sim.presentations import ENUM_WORDS

        raw, param = self.raw_label(name), name.split(":")[-1]
        if raw is None:
            return None
        spelled = [w.lower() for w in self.look.words()[param]]
        return ENUM_WORDS[param][spelled.index(raw.lower())] if raw.lower() in spelled else raw

    def is_on(self, name: str) -> bool:
        """Whether the Pw PV ``<slot>:<chan>`` reads On, whatever the IOC's labels."""
        return self.label(f"{name}:Pw") == "On"


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
def flavour() -> str:
    """The IOC flavour of the crate and the service (parametrised by :func:`pytest_generate_tests`)."""
    return "trackerdcs"


@pytest.fixture
def enum_labels() -> str:
    """The crate's enum label lists (parametrised by :func:`pytest_generate_tests` or the test)."""
    return "default"


@pytest.fixture
def caen_config(tmp_path: Path, config_overrides: dict, flavour: str) -> Path:
    from caen_sim.presentations import PRESENTATIONS

    config = {**CONFIG, "flavour": flavour_config(flavour), **config_overrides}
    if "ImRange" in PRESENTATIONS[flavour].absent:  # an IOC without ImRange: the setting cannot be configured
        config["global"] = {
            **config["global"],
            "hv": {k: v for k, v in config["global"]["hv"].items() if k != "imRange"},
        }
    path = tmp_path / "caen.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def crate(tmp_path: Path, caen_config: Path, enum_labels: str, flavour: str) -> Iterator[SimCrate]:
    sim = SimCrate(caen_config, tmp_path / "caen-sim.log", enum_labels, flavour)
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
