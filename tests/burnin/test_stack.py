"""The burn-in sequencer against the whole simulation stack (real Mosquitto, Node-RED interlocks, caen-fsm on
the simulated crate's Channel Access, julabo-fsm on the simulated chiller, the ph2acf bridge and its simulator):
the short recipe end to end; killed mid-step it comes back PAUSED there and commands nothing; an interlock trip
aborts it to the safe state for good."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from julabo_sim import control_client

from trackerdcs.client import DcsClient, Message
from trackerdcs.config import MqttSettings, load_yaml
from trackerdcs.localbroker import REPO, free_port
from trackerdcs.localca import loopback_ca_env
from trackerdcs.supervisor import stop_process

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (REPO / "node-red" / "node_modules" / "node-red").is_dir(), reason="Node-RED not installed (setup.sh)"
    ),
]
BURNIN = Path(sys.executable).with_name("burnin")
DCS = Path(sys.executable).with_name("dcs")


class Stack:
    def __init__(self, var: Path) -> None:
        self.var = var
        self.ports = json.loads((var / "ports.json").read_text())
        self.mqtt = load_yaml(var / "dcs.yml")["mqtt"]
        self.dcs = DcsClient(MqttSettings.from_config(self.mqtt, env={}))
        self.messages: list[Message] = []
        self.proc: subprocess.Popen[str] | None = None
        self.config = var / "burnin.yml"
        self.config.write_text(
            "mqtt:\n"
            f"  host: 127.0.0.1\n  port: {self.mqtt['port']}\n  username: burnin\n"
            f"  password_file: {var / 'secrets' / 'mqtt-burnin'}\n"
            "stand: simstand\n"
            "modules:\n"
            "  module_0: {hv_limit_v: 350, compliance_ua: 4, bias_v: 200}\n"
            "  module_1: {hv_limit_v: 600, compliance_ua: 4, bias_v: 200}\n"
            "  module_2: {hv_limit_v: 600, compliance_ua: 4, bias_v: 200}\n"
            "humidity_sensors: [box, wetbox]\n"
            "limits: {setpoint_min: -35, setpoint_max: 40}\n"
            "retry_interval_s: 2\n"
            f"state_dir: {var / 'burnin' / 'state'}\n"
            f"archive_dir: {var / 'burnin' / 'archive'}\n"
            f"spool_dir: {var / 'burnin' / 'spool'}\n"
            f"recipes_dir: {REPO / 'services' / 'burnin' / 'recipes'}\n"
            "mongo: {uri: 'mongomock://stand-in'}\n"
        )

    def start_burnin(self) -> None:
        log = (self.var / "logs" / "burnin.log").open("a")
        self.proc = subprocess.Popen([str(BURNIN), "--config", str(self.config)], stdout=log, stderr=log, text=True)
        self.dcs.wait_for(
            "burnin/availability", lambda m: m.payload == b"online" and m.received > time.time() - 5, timeout=30
        )

    def kill_burnin(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def status(self) -> dict:
        return self.dcs.command("burnin", "status")["result"]

    def wait_state(self, *states: str, timeout: float) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            st = self.status()
            if st["state"] in states:
                return st
            time.sleep(0.5)
        pytest.fail(f"burn-in not in {states} within {timeout} s: {self.status()}")

    def ready(self) -> None:
        """Chiller running, interlock acknowledged and OK, everything off: where every test starts."""
        d = self.dcs
        d.command("caen", "hv_off")
        d.command("caen", "lv_off")
        d.wait_for("caen/status", lambda m: m.json()["state"] == "OFF", timeout=60)
        assert control_client.send(self.ports["julabo_control"], "bath 21").startswith("OK")
        d.command("julabo", "start")
        d.wait_for("julabo/status", lambda m: m.json()["state"] == "RUNNING", timeout=20)
        d.wait_for(
            "interlock/status", lambda m: not m.json()["conditions"] and not m.json()["lv_off_pending"], timeout=60
        )
        if d.status("interlock")["state"] != "OK":
            d.command("interlock", "acknowledge", operator="pytest")
        d.wait_for("interlock/status", lambda m: m.json()["state"] == "OK", timeout=10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sim_stack_launcher):
    var = tmp_path_factory.mktemp("burnin-stack")
    # the test runs its own sequencer (it kills and restarts it, and adds a second humidity sensor); the chiller
    # simulator runs 4x faster than a real bath so that the plateaus of the short recipe take seconds
    args = ("--node-red-port", str(free_port()), "--no-burnin", "--chiller-time-scale", "4")
    with sim_stack_launcher(var, *args, timeout=180, expect="Operator UI"):
        s = Stack(var)
        s.dcs.connect()
        s.dcs.watch("#", s.messages.append)
        s.dcs.wait_for("interlock/availability", lambda m: m.payload == b"online", timeout=60)
        sensor = WetBox(
            MqttSettings.from_config(
                {**s.mqtt, "username": "sensors", "password_file": str(var / "secrets" / "mqtt-sensors")}, env={}
            )
        )
        s.wetbox = sensor
        s.start_burnin()
        yield s
        sensor.stop()
        if s.proc is not None and s.proc.poll() is None:
            stop_process(s.proc, timeout=20)
        s.dcs.close()


class WetBox:
    """A second environment sensor in the box whose humidity the test sets (user ``sensors``, like a gateway)."""

    def __init__(self, settings: MqttSettings) -> None:
        self.humidity = 5.0
        self.client = DcsClient(settings, client_id="wetbox-sensor")
        self.client.connect()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            doc = {"temperature": 20.0, "humidity": self.humidity, "ts": time.time()}
            self.client.client.publish("env/wetbox", json.dumps(doc), qos=1, retain=True)
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()


def put_pv_when(stack: Stack, watch: str, above: float, pv: str, value: float) -> subprocess.Popen[str]:
    """Fault injection on the simulated crate (a separate process: libca reads its environment once):
    when ``watch`` exceeds ``above``, write ``value`` to ``pv``."""
    code = (
        "import time, epics\n"
        f"w = epics.PV({watch!r}); p = epics.PV({pv!r})\n"
        "w.wait_for_connection(10); p.wait_for_connection(10)\n"
        "deadline = time.time() + 600\n"
        f"while time.time() < deadline and (w.get() or 0) <= {above}:\n"
        "    time.sleep(0.05)\n"
        f"p.put({value}, wait=True)\n"
        "print('injected', w.get(), flush=True)\n"
    )
    env = {**os.environ, **loopback_ca_env(stack.ports["caen_ca"])}
    env.pop("EPICS_CA_SERVER_PORT")
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def commands_from_burnin(stack: Stack, since: float) -> list[str]:
    return [
        m.topic
        for m in list(stack.messages)
        if m.received >= since
        and "/cmd/" in m.topic
        and not m.topic.startswith("burnin/")
        and str(_json(m).get("id", "")).startswith("burnin-")
    ]


def _json(m: Message) -> dict:
    try:
        doc = json.loads(m.payload)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def test_short_recipe_runs_end_to_end(stack):
    """Started from the command line with --follow, which prints the progress and returns when it is DONE."""
    stack.ready()
    argv = [str(DCS), "--config", str(stack.var / "dcs.yml"), "burnin", "start", "sim-short", "operator=pytest",
            "comment=e2e", "--follow"]  # fmt: skip
    follow = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert follow.returncode == 0, follow.stdout + follow.stderr
    uid = re.search(r'"uid": "([^"]+)"', follow.stdout).group(1)
    progress = [line for line in follow.stdout.splitlines() if line.startswith(("RUNNING", "HOLDING", "DONE"))]
    assert progress[-1].startswith("DONE"), follow.stdout
    assert any("step 4/11 IV scan warm" in line and "ETA" in line for line in progress), follow.stdout
    assert "[info] step_end: step 11 LV off: done" in follow.stdout, follow.stdout  # the events, as they come
    history = stack.status()
    assert history["state"] == "DONE" and history["uid"] == uid, history
    doc = json.loads((stack.var / "burnin" / "archive" / uid / "burnin.json").read_text())
    assert [s["outcome"] for s in doc["steps"]] == ["done"] * 11, doc["steps"]
    assert doc["calibrations"][0]["outcome"] == "done"
    scans = list((stack.var / "burnin" / "archive" / uid / "iv").glob("*.json"))
    assert len(scans) == 1
    iv = json.loads(scans[0].read_text())["modules"]
    for module, scan in iv.items():
        assert scan["outcome"] == "done", (module, scan)
        assert [p["set_v"] for p in scan["points"]] == [0, -20, -40, -60, -80, -100, -150, -200]
        for p in scan["points"]:
            assert abs(p["vmon"] - p["set_v"]) <= 2.0 and p["ts"] is not None
    # the scan restored the operating bias (caen-fsm applies remembered set values on the next hv_on)
    v0 = {t: m.json()["v0set"] for t, m in stack.dcs.latest("caen/status/channel/+").items() if t.endswith("_hv")}
    assert v0["caen/status/channel/module_1_hv"] == pytest.approx(200.0) and history["state"] == "DONE"
    assert stack.dcs.status("caen")["state"] == "OFF"
    shown = stack.dcs.command("burnin", "iv", module="module_1")["result"]["scans"]  # what dcs burnin iv prints
    assert shown[0]["burnin"] == uid and shown[0]["outcome"] == "done" and len(shown[0]["points"]) == 8


def test_killed_mid_step_comes_back_paused_there_and_commands_nothing(stack):
    stack.ready()
    stack.dcs.command("burnin", "start", recipe="sim-short", operator="pytest")
    deadline = time.time() + 300
    while stack.status()["step_name"] != "IV scan warm":
        assert time.time() < deadline, stack.status()
        time.sleep(0.2)
    time.sleep(2.0)  # mid-scan
    stack.kill_burnin()
    killed = time.time()
    stack.start_burnin()
    st = stack.status()
    assert st["state"] == "PAUSED" and st["step_name"] == "IV scan warm", st
    time.sleep(3.0)
    assert commands_from_burnin(stack, killed) == [], "a restarted sequencer must command nothing by itself"
    assert stack.status()["state"] == "PAUSED"
    stack.dcs.command("burnin", "resume", operator="pytest")
    st = stack.wait_state("DONE", "ABORTED", "FAILED", "HOLDING", timeout=900)
    assert st["state"] == "DONE", st
    hist = stack.dcs.command("burnin", "status")["result"]["history"]
    iv = [h["outcome"] for h in hist if h["name"] == "IV scan warm"]
    assert iv[0] == "interrupted" and iv[-1] == "done"


def test_interlock_trip_mid_sequence_aborts_to_the_safe_state_and_never_resumes(stack):
    stack.ready()
    stack.dcs.command("burnin", "start", recipe="sim-short", operator="pytest")
    deadline = time.time() + 300
    while stack.status()["step_name"] != "hold warm":
        assert time.time() < deadline, stack.status()
        time.sleep(0.2)
    assert stack.dcs.status("caen")["state"] == "HV_ON"
    assert control_client.send(stack.ports["julabo_control"], "bath 30").startswith("OK")  # too warm: trip
    st = stack.wait_state("ABORTED", "FAILED", timeout=120)
    assert st["state"] == "ABORTED" and "interlock" in st["abort_reason"], st
    assert stack.dcs.status("caen")["state"] == "OFF"
    setpoints = [
        _json(m).get("value")
        for m in stack.messages
        if m.topic == "julabo/cmd/set_setpoint" and str(_json(m).get("id", "")).startswith("burnin-")
    ]
    assert setpoints[-1] == 20.0  # the configured safe temperature
    # conditions clear and the interlock is acknowledged: the burn-in stays aborted, nothing is commanded
    assert control_client.send(stack.ports["julabo_control"], "bath 21").startswith("OK")
    stack.ready()
    calm = time.time()
    time.sleep(3.0)
    assert stack.status()["state"] == "ABORTED"
    assert commands_from_burnin(stack, calm) == []


def test_one_module_breaking_down_in_a_parallel_iv_scan_stops_only_that_module(stack):
    stack.ready()
    leak = "cleanroom:SIM:12:002:Leakage"  # module_2's HV channel: a steep current rise past 110 V
    injector = put_pv_when(stack, "cleanroom:12:002:VMon", 110.0, leak, 3.0)
    try:
        started = stack.dcs.command("burnin", "start", recipe="sim-short", operator="pytest")["result"]
        deadline = time.time() + 600
        scans: list[Path] = []
        while not scans:
            assert time.time() < deadline, stack.status()
            scans = list((stack.var / "burnin" / "archive" / started["uid"] / "iv").glob("*.json"))
            time.sleep(0.5)
        assert "injected" in injector.communicate(timeout=30)[0]
    finally:
        if injector.poll() is None:
            injector.kill()
        put_pv_when(stack, "cleanroom:12:002:VMon", -1.0, leak, 0.0).wait(30)
    iv = json.loads(scans[0].read_text())["modules"]
    assert iv["module_2"]["outcome"] == "breakdown", iv["module_2"]["reason"]
    assert len(iv["module_2"]["points"]) < 8
    for module in ("module_0", "module_1"):
        assert iv[module]["outcome"] == "done" and len(iv[module]["points"]) == 8
    # module_2 was ramped down (V0Set 0) while the others went on to their last point and only then ramped down
    since = started_at(stack, started["uid"])
    ramp_downs = [
        _json(m).get("module")
        for m in list(stack.messages)
        if m.received >= since
        and m.topic == "caen/cmd/set"
        and _json(m).get("param") == "V0Set"
        and _json(m).get("value") == 0.0
        and str(_json(m).get("id", "")).startswith("burnin-")
    ]
    assert ramp_downs[:3] == ["module_0", "module_1", "module_2"], ramp_downs  # the scan's first point, 0 V
    assert ramp_downs[3] == "module_2" and set(ramp_downs[4:6]) == {"module_0", "module_1"}, ramp_downs
    st = stack.wait_state("DONE", "ABORTED", "FAILED", "HOLDING", timeout=600)
    assert st["state"] == "DONE", st


def started_at(stack: Stack, uid: str) -> float:
    return next(m.received for m in stack.messages if m.topic == "burnin/event" and _json(m).get("uid") == uid)


def test_dew_point_holds_a_cold_step_until_the_air_is_dry(stack):
    stack.ready()
    # dew point ~14.8 C at 20 C air: with the 5 K margin no setpoint below ~19.8 C, so the 18 C step must wait
    stack.wetbox.humidity = 72.0
    time.sleep(2.5)
    stack.dcs.command("burnin", "start", recipe="sim-short", operator="pytest")
    deadline = time.time() + 600
    while not (stack.status()["step_name"] == "cool" and stack.status()["state"] == "HOLDING"):
        st = stack.status()
        assert time.time() < deadline and st["state"] in ("RUNNING", "HOLDING"), st
        time.sleep(0.5)
    st = stack.status()
    assert st["hold_auto"] is True and "waiting for dry air" in st["message"], st
    time.sleep(10.0)
    julabo = stack.dcs.status("julabo")
    assert julabo["setpoint"] >= 19.7, julabo  # never below dew point + margin
    assert stack.status()["step_name"] == "cool" and stack.status()["state"] == "HOLDING"
    stack.wetbox.humidity = 5.0  # the dry air arrives: it goes on by itself
    st = stack.wait_state("DONE", "ABORTED", "FAILED", timeout=600)
    assert st["state"] == "DONE", st
