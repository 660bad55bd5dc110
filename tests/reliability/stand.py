"""A whole simulated test stand for the reliability tests: the three services and their simulators as real
processes on loopback, against the module's real Mosquitto.

* caen-sim (a real EPICS Channel Access IOC) + caen-fsm,
* julabo-sim (serial-over-TCP) + julabo-fsm,
* ph2acf-sim (RunController on TCP) + ph2acf-bridge (TCP mode, runs archived on disk),
* what the Node-RED interlock publishes (retained ``interlock/status`` OK, refreshed every 20 s, and
  ``interlock/availability``) as the ``nodered`` account: caen-fsm switches nothing on without it.

Every process gets free ports, logs into the stand's folder and is stopped (SIGTERM, then SIGKILL) by
:meth:`Stand.stop`. Device-side truth (what the simulated devices were told to do) is read from the
simulators, never from the services: Channel Access reads through a short-lived helper process (this test
process never loads libca, so it cannot clash with other test modules' CA settings), the chiller's state
through its control port, Ph2_ACF runs from its working folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml
from julabo.service_config import julabo_config
from julabo_sim import control_client

from trackerdcs.client import DcsClient
from trackerdcs_devstack.localbroker import LocalBroker, free_port, wait_port
from trackerdcs_devstack.localca import loopback_ca_env
from trackerdcs_devstack.supervisor import read_until

BIN = Path(sys.executable).parent
SERVICES = ("caen", "julabo", "ph2acf")
SYSTEM = "relstand"

#: fast simulated calibration runs
PH2ACF_SIM_ENV = {"PH2ACF_SIM_DURATION": "1.5", "PH2ACF_SIM_MATRIX": "48x40", "PH2ACF_SIM_STEPS": "6"}


def caen_config(modules: int, lv_per_board: int = 48, hv_slot0: int = 50) -> dict[str, Any]:
    """A crate of ``modules`` LV+HV pairs (LV in slots 0.., HV from slot ``hv_slot0``), fast ramps."""
    channels = {
        str(i): {
            "module": f"M{i:04d}",
            "lv": {"board": i // lv_per_board, "chan": i % lv_per_board},
            "hv": {"board": hv_slot0 + i // lv_per_board, "chan": i % lv_per_board},
        }
        for i in range(modules)
    }
    return {
        "system": SYSTEM,
        "channels": channels,
        "global": {
            "lv": {"setV": 12.0, "maxI": 3.0, "tripTime": 0.3, "rampUpTime": 0.2, "rampDwnTime": 0.2},
            "hv": {"setV": 100.0, "maxI": 10.0, "rampUpSpeed": 300.0, "rampDwnSpeed": 300.0, "tripTime": 0.3},
        },
        "limits": {"lv": {"V0Set": 14.0, "I0Set": 5.0}, "hv": {"V0Set": 600.0, "I0Set": 20.0}},
        "deadbands": {"vmon": {"abs": 0.5}, "hv_vmon": {"abs": 0.5}, "lv_vmon": {"abs": 0.5}},
        "service": {"heartbeat_s": 30, "hv_safe_voltage": 5.0},
    }


def _stop(proc: subprocess.Popen[Any] | None, timeout: float = 8.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@dataclass
class Stand:
    """The processes of one simulated test stand. Call :meth:`start`, then :meth:`stop` (always)."""

    broker: LocalBroker
    work: Path
    modules: int = 3
    caen_noise_hz: float = 0.0
    caen_tick_s: float = 0.05
    ph2acf_mongo_uri: str = ""
    procs: dict[str, subprocess.Popen[Any]] = field(default_factory=dict)
    interlock_every_s: float = 20.0

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.ca_port = free_port()
        self.ca_env = loopback_ca_env(self.ca_port)
        self.caen_yml = self.work / "caen.yml"
        self.caen_yml.write_text(yaml.safe_dump(caen_config(self.modules)))
        self.ph2acf_workdir = self.work / "ph2acf-run"
        self.ph2acf_data = self.work / "ph2acf-data"
        self.ph2acf_workdir.mkdir(exist_ok=True)
        self.ph2acf_port = free_port()
        self.julabo_endpoints: dict[str, Any] = {}

    # ------------------------------------------------------------------ process helpers
    def log(self, name: str) -> Path:
        return self.work / f"{name}.log"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], stdout: Any = subprocess.DEVNULL) -> Any:
        logf = open(self.log(name), "ab")  # noqa: SIM115 - handed to the child, closed right after
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=stdout,
            stderr=logf,
            text=True,
            start_new_session=True,
        )
        logf.close()
        self.procs[name] = proc
        return proc

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.procs.items()}

    def tracebacks(self) -> dict[str, int]:
        """How many Python tracebacks each process has logged (a handled error logs none)."""
        return {name: self.log(name).read_text(errors="replace").count("Traceback") for name in self.procs}

    def ps(self, name: str) -> psutil.Process:
        return psutil.Process(self.procs[name].pid)

    # ------------------------------------------------------------------ simulators
    def start_caen_sim(self) -> None:
        argv = [str(BIN / "caen-sim"), "--config", str(self.caen_yml), "--port", str(self.ca_port)]
        argv += ["--interface", "127.0.0.1", "--tick", str(self.caen_tick_s)]
        if self.caen_noise_hz:
            argv += ["--noise-hz", str(self.caen_noise_hz)]
        proc = self._spawn("caen-sim", argv, self.ca_env, stdout=subprocess.PIPE)
        read_until(proc, "caen-sim ready", 30)

    def kill_caen_sim(self) -> None:
        proc = self.procs.get("caen-sim")
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def start_julabo_sim(self) -> None:
        argv = [str(BIN / "julabo-sim"), "--seed", "7", "--no-pty", "--host", "127.0.0.1", "--log-level", "WARNING"]
        if self.julabo_endpoints:  # a restart keeps the ports the service knows
            argv += ["--tcp-port", str(self.julabo_endpoints["tcp_port"])]
            argv += ["--control-port", str(self.julabo_endpoints["control_port"])]
        proc = self._spawn("julabo-sim", argv, {}, stdout=subprocess.PIPE)
        line = read_until(proc, "READY ", 15)
        self.julabo_endpoints = json.loads(line.split("READY ", 1)[1])

    def julabo_control(self, command: str) -> str:
        return control_client.send(self.julabo_endpoints["control_port"], command)

    def julabo_state(self) -> dict[str, Any]:
        return json.loads(self.julabo_control("state"))

    def start_ph2acf_sim(self) -> None:
        argv = [str(BIN / "ph2acf-sim"), "--host", "127.0.0.1", "--port", str(self.ph2acf_port)]
        argv += ["--workdir", str(self.ph2acf_workdir), "--write-example-xml", "CMSIT.xml"]
        self._spawn("ph2acf-sim", argv, PH2ACF_SIM_ENV)
        wait_port("127.0.0.1", self.ph2acf_port, 15)

    # ------------------------------------------------------------------ interlock
    def _interlock_send(self, topic: str, payload: str) -> None:
        self._interlock.client.publish(topic, payload.encode(), qos=1, retain=True).wait_for_publish(5)

    def _interlock_ok(self) -> None:
        doc = {"state": "OK", "active": [], "conditions": [], "details": [], "lv_off_pending": False,
               "ts": time.time()}  # fmt: skip
        self._interlock_send("interlock/status", json.dumps(doc))

    def start_interlock(self) -> None:
        """Publish an OK interlock, as Node-RED does, and keep it fresh until :meth:`stop`."""
        self._interlock = DcsClient(self.broker.settings("nodered")).connect()
        self._interlock_stop = threading.Event()
        self._interlock_send("interlock/availability", "online")
        self._interlock_ok()

        def beat() -> None:
            while not self._interlock_stop.wait(self.interlock_every_s):
                with contextlib.suppress(Exception):  # the broker may be down (broker-kill test)
                    self._interlock_ok()

        threading.Thread(target=beat, name="interlock-stand-in", daemon=True).start()

    def stop_interlock(self) -> None:
        if getattr(self, "_interlock", None) is None:
            return
        self._interlock_stop.set()
        with contextlib.suppress(Exception):
            self._interlock_send("interlock/status", "")
            self._interlock_send("interlock/availability", "")
        self._interlock.close()
        self._interlock = None

    # ------------------------------------------------------------------ services
    def _mqtt_env(self, user: str) -> dict[str, str]:
        return {**self.broker.env(user), "DCS_MQTT_CLIENT_ID": f"{user}-rel-{uuid.uuid4().hex[:8]}"}

    def start_caen(self) -> None:
        argv = [str(BIN / "caen-fsm"), "--config", str(self.caen_yml)]
        self._spawn("caen-fsm", argv, {**self.ca_env, **self._mqtt_env("caen")})

    def start_julabo(self) -> None:
        cfg = julabo_config(f"socket://127.0.0.1:{self.julabo_endpoints['tcp_port']}")
        path = self.work / "julabo.yml"
        path.write_text(yaml.safe_dump(cfg))
        self._spawn("julabo-fsm", [str(BIN / "julabo-fsm"), "--config", str(path)], self._mqtt_env("julabo"))

    def start_ph2acf(self) -> None:
        cfg = {
            "ph2acf": {
                "stand": "reliability",
                "mode": "tcp",
                "flavour": "it",
                "workdir": str(self.ph2acf_workdir),
                "config_file": "CMSIT.xml",
                # release: ph2acf-sim's default personality (string protocol, 8-byte framing)
                "tcp": {
                    "host": "127.0.0.1",
                    "port": self.ph2acf_port,
                    "poll_s": 0.2,
                    "timeout_s": 5,
                    "release": "2021-2022",
                },
            },
            "storage": {
                "archive_dir": str(self.ph2acf_data / "archive"),
                "spool_dir": str(self.ph2acf_data / "spool"),
                "state_dir": str(self.ph2acf_data / "state"),
                "replay_interval_s": 5,
                "mongo": {"uri": self.ph2acf_mongo_uri},
            },
        }
        path = self.work / "ph2acf.yml"
        path.write_text(yaml.safe_dump(cfg))
        env = {**self._mqtt_env("ph2acf"), "PYTHONMALLOC": "malloc"}  # as in the pod (docs/services/ph2acf.md)
        self._spawn("ph2acf-bridge", [str(BIN / "ph2acf-bridge"), "--config", str(path)], env)

    def start(self, client: Any, timeout: float = 60.0) -> None:
        """Start simulators, then services; return once each service is online with its device connected.
        ``client``: a connected :class:`~trackerdcs.client.DcsClient` allowed to read every service."""
        since = time.time()
        self.start_interlock()
        self.start_caen_sim()
        self.start_julabo_sim()
        self.start_ph2acf_sim()
        self.start_caen()
        self.start_julabo()
        self.start_ph2acf()
        self.wait_ready(client, since, timeout)

    def wait_ready(self, client: Any, since: float, timeout: float = 60.0) -> None:
        """Each service has published a status stamped after ``since`` with its device connected."""
        ready = {
            "caen": lambda d: d.get("connected") is True,
            "julabo": lambda d: d.get("connected") is True and d.get("setpoint_1") is not None,
            "ph2acf": lambda d: d.get("state") == "IDLE",
        }
        for svc, ok in ready.items():
            client.wait_for(
                f"{svc}/status", lambda m, ok=ok: bool(m.payload) and m.json()["ts"] >= since and ok(m.json()), timeout
            )

    def stop(self) -> None:
        """Services first (they say offline), then the simulators."""
        for name in ("ph2acf-bridge", "julabo-fsm", "caen-fsm", "ph2acf-sim", "julabo-sim"):
            _stop(self.procs.get(name), timeout=20 if name == "ph2acf-bridge" else 8)
        self.kill_caen_sim()  # the EPICS IOC has no clean shutdown anyway
        self.stop_interlock()

    # ------------------------------------------------------------------ device-side truth
    def ca_read(self, names: list[str], timeout: float = 20.0) -> dict[str, Any]:
        """Read PVs (names without the crate prefix) from the simulated crate, in a helper process."""
        code = (
            "import json,sys,epics\n"
            "names=json.loads(sys.argv[1])\n"
            "pvs=[epics.PV(sys.argv[2]+':'+n, auto_monitor=False) for n in names]\n"
            "[p.wait_for_connection(5) for p in pvs]\n"
            "print(json.dumps({n: p.get(timeout=5, use_monitor=False) for n, p in zip(names, pvs)}))\n"
        )
        for attempt in (1, 2):  # a loaded machine may miss the 5 s connection window once
            out = subprocess.run(
                [sys.executable, "-c", code, json.dumps(names), SYSTEM],
                env={**os.environ, **self.ca_env},
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if out.returncode == 0:
                break
            if attempt == 2:
                raise RuntimeError(f"reading {len(names)} PVs failed ({out.returncode}): {out.stderr[-1500:]}")
        values = json.loads(out.stdout.strip().splitlines()[-1])
        return {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in values.items()}

    def crate_settings_pvs(self) -> list[str]:
        """Every operator-settable PV of the configured channels plus the crate's Pw On counter."""
        names = ["SIM:PwOnPuts"]
        cfg = caen_config(self.modules)
        for entry in cfg["channels"].values():
            for kind in ("lv", "hv"):
                base = f"{entry[kind]['board']:02d}:{entry[kind]['chan']:03d}"
                params = ["Pw", "V0Set", "I0Set", "Trip", "TripInt", "TripExt"]
                lv_only, hv_only = ["UNVThr", "OVVThr", "RUpTime", "RDwTime"], ["RUp", "RDWn", "PDwn", "ImRange"]
                extra = lv_only if kind == "lv" else hv_only
                params += extra
                names += [f"{base}:{p}" for p in params]
        return names

    def ph2acf_runs_on_device(self) -> int:
        """Runs the simulated Ph2_ACF has carried out (result files in its working folder)."""
        results = self.ph2acf_workdir / "Results"
        return len(list(results.glob("Run_*/Results.root"))) if results.exists() else 0
