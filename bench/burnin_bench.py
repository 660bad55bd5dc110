"""Burn-in sequencer benchmarks against the whole simulation stack (``dcs-sim``: real Mosquitto, Node-RED
interlocks, caen-fsm on the simulated crate's Channel Access, julabo-fsm on the simulated chiller, the Ph2_ACF
bridge, the environment sensors, the sequencer), time-scaled.

``iv``: an IV scan of 10 modules in parallel (the standard profile, 0 to -800 V, 51 points) against its physical
time (ramps + settling, :meth:`burnin.recipe.IvProfile.physical_s`). Target: at most 5 % longer.

``standard``: the whole standard burn-in (``services/burnin/recipes/standard-burnin.yml``, 127 steps) on the
same 10-module stand. A recorder (``mosquitto_sub``) keeps every message with the broker's delivery time. For
every step the bench takes, from each document's own ``ts``, the moment the step's condition was met: a wait's
duration, an IV scan's physical time, the carrier sensor within tolerance for ``stable_for``, the modules in the
target state, the chiller running, the Ph2_ACF run back to IDLE, the prompt acknowledged. Added is the rest: the
time from that moment to the step's end, plus the gaps between steps. Of it, the sequencer's own share runs from
the delivery of what decided the step (or its own timer) to its reaction by its own clock (:func:`sequencer_s`);
the remainder is the rest of the stack. Target: the sequencer adds less than 1 % of the physical waiting time.

Every figure is in simulated seconds (real seconds x time scale); a real latency L adds L x scale, so the share
grows with the scale: the bench says the real latency per step as well. ``--trace`` adds the latency of every
hop from the processes' own marks (:mod:`trackerdcs.latencytrace`); ``--keep`` keeps the run, ``--reanalyse``
analyses a kept run again.

    .venv/bin/python bench/burnin_bench.py iv --time-scale 2
    .venv/bin/python bench/burnin_bench.py standard --time-scale 30 --trace

Writes bench/results/burnin_<mode>_x<scale>.json.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from burnin.app import COMMAND_DEADLINE_S
from burnin.iv import SAFE_V
from burnin.recipe import PowerAction, Recipe, StepKind, load_recipe
from burnin.settings import parse_settings
from burnin.steps import HV_IS_OFF, TARGET_STATES

from trackerdcs import latencytrace
from trackerdcs.client import DcsClient
from trackerdcs.config import MqttSettings, load_yaml
from trackerdcs_devstack.localbroker import REPO, free_port
from trackerdcs_devstack.supervisor import stop_process

RESULTS = Path(__file__).parent / "results"
MODULES = [f"module_{i}" for i in range(10)]
VENV = Path(sys.executable).parent
IV_RECIPE = """name: iv-bench
description: one IV scan (standard profile) of every module
iv_profiles:
  standard:
    segments:
      - {from: 0, to: -200, step: 10}
      - {from: -200, to: -800, step: 20}
    settle: 1s
    ramp: 10
steps:
  - chiller: {action: start, name: start chiller}
  - power: {action: lv_on, name: LV on}
  - iv_scan: {profile: standard, name: IV scan}
  - power: {action: lv_off, name: LV off}
"""


# ---------------------------------------------------------------------------- the stand


def write_stand(var: Path, scale: float) -> dict[str, Path]:
    """A 10-module stand: caen-fsm config (LV slots 0-1, HV slot 12), caen-sim physics without breakdown, the
    sequencer's config (HV limit 800 V, chiller setpoints down to -40 C) and its recipes folder."""
    var.mkdir(parents=True, exist_ok=True)
    chans = []
    for i, m in enumerate(MODULES):
        chans.append(
            f'    "{i}":\n        lv: {{board: {i // 8}, chan: {i % 8}}}\n        hv: {{board: 12, chan: {i}}}\n'
            f"        module: {m}\n"
        )
    caen = (REPO / "services/caen-fsm/example.yml").read_text()
    head, _, rest = caen.partition("channels:\n")
    tail = rest[rest.index("\nglobal:") :]
    caen = head + "channels:\n" + "".join(chans) + tail
    caen = caen.replace("hv: {V0Set: 600., I0Set: 20.,", "hv: {V0Set: 800., I0Set: 20.,")
    caen = caen.replace("        module_0_hv: {V0Set: 350.}\n", "")
    paths = {"caen": var / "caen-fsm.yml", "caen_sim": var / "caen-sim.yml", "burnin": var / "burnin.yml"}
    paths["caen"].write_text(caen)
    sim = (REPO / "services/caen-fsm/caen-sim.yml").read_text()
    paths["caen_sim"].write_text(sim[: sim.index("channels:")])  # every sensor without breakdown
    recipes = var / "recipes"
    recipes.mkdir(exist_ok=True)
    # the simulation stack's Ph2_ACF simulator runs the inner-tracker flavour: the standard recipe's outer-tracker
    # module tests become runs of the same length under IT names (a calibration lasts --run-seconds either way)
    standard = (REPO / "services/burnin/recipes/standard-burnin.yml").read_text()
    standard = standard.replace("calibration: calibrationandpedenoise,", "calibration: scurve,")
    (recipes / "standard-burnin.yml").write_text(standard.replace("calibration: pedenoise,", "calibration: noise,"))
    (recipes / "iv-bench.yml").write_text(IV_RECIPE)
    mods = "".join(f"  {m}: {{hv_limit_v: 800, compliance_ua: 10, bias_v: 300}}\n" for m in MODULES)
    paths["burnin"].write_text(
        "mqtt: {username: burnin, client_id: burnin-bench}\n"
        "stand: bench\n"
        f"modules:\n{mods}"
        "humidity_sensors: [box]\n"
        "limits: {setpoint_min: -40, setpoint_max: 40}\n"
        "estimates: {chiller_k_per_min: 2, calibration_default_s: 20}\n"
        "retry_interval_s: 2\n"
        f"state_dir: {var / 'burnin/state'}\narchive_dir: {var / 'burnin/archive'}\n"
        f"spool_dir: {var / 'burnin/spool'}\nrecipes_dir: {recipes}\n"
        "mongo: {uri: ''}\n"
        "time_scale: ${BURNIN_TIME_SCALE:-1}\n"
    )
    return paths


@dataclass
class Seen:
    """What the bench saw: every message by its arrival, and the prompts it acknowledged."""

    #: (topic, received, doc): when each document reached the broker's subscribers, the sequencer among them
    arrivals: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)
    acks: list[float] = field(default_factory=list)

    @property
    def messages(self) -> list[tuple[str, float, dict[str, Any]]]:
        """(topic, ts, doc) of every document (not the commands and replies), by its own ``ts`` (else its arrival)."""
        return [
            (t, float(d["ts"]) if isinstance(d.get("ts"), (int, float)) else r, d)
            for t, r, d in self.arrivals
            if "/cmd/" not in t and not t.endswith("/reply")
        ]

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps({"arrivals": self.arrivals, "acks": self.acks}))

    @classmethod
    def load(cls, path: Path) -> Seen:
        raw = json.loads(path.read_text())
        return cls([tuple(x) for x in raw["arrivals"]], raw["acks"])


class Bench:
    def __init__(self, var: Path, scale: float, run_seconds: float, trace: bool = False) -> None:
        self.var, self.scale = var, scale
        self.paths = write_stand(var, scale)
        argv = [
            str(VENV / "dcs-sim"), "--var", str(var), "--mqtt-port", str(free_port()),
            "--node-red-port", str(free_port()), "--time-scale", str(scale), "--run-seconds", str(run_seconds),
            "--caen-config", str(self.paths["caen"]), "--caen-sim-config", str(self.paths["caen_sim"]),
            "--burnin-config", str(self.paths["burnin"]),
        ]  # fmt: skip
        self.log = (var / "dcs-sim.out").open("w")
        self.trace = var / "latency.trace" if trace else None
        env = {**os.environ, **({"TRACKERDCS_LATENCY_TRACE": str(self.trace)} if self.trace else {})}
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.time() + 180
        while "Ctrl-C stops the stack" not in (var / "dcs-sim.out").read_text():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("dcs-sim did not come up:\n" + (var / "dcs-sim.out").read_text()[-3000:])
            time.sleep(0.5)
        self.mqtt = load_yaml(var / "dcs.yml")["mqtt"]
        self.dcs = DcsClient(MqttSettings.from_config(self.mqtt, env={})).connect()
        self.seen = Seen()
        # The recorder is mosquitto_sub (C): a Python subscriber of every status document would load the 2-core
        # machine it measures, and its own receive lag would blur the arrival times. %U: arrival, Unix time (ns).
        self.raw = var / "recorded.txt"
        topics = [
            "burnin/event", "env/carrier", "caen/status/module/+", "caen/status/channel/+", "julabo/status",
            "ph2acf/status", "+/cmd/+", "+/reply",
        ]  # fmt: skip
        self.recorder = subprocess.Popen(
            ["mosquitto_sub", "-h", str(self.mqtt["host"]), "-p", str(self.mqtt["port"]), "-u", self.mqtt["username"],
             "-P", Path(self.mqtt["password_file"]).read_text().strip(), "-q", "1", "-F", "%U %t %p",
             *itertools.chain.from_iterable(("-t", t) for t in topics)],
            stdout=self.raw.open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip

    def collect(self) -> Seen:
        """Stop the recorder and read what it saw."""
        self.recorder.terminate()
        self.recorder.wait(10)
        seen = Seen(acks=list(self.seen.acks))
        for line in self.raw.read_text().splitlines():
            received, topic, payload = line.split(" ", 2)
            try:
                doc = json.loads(payload)
            except ValueError:
                continue
            if not isinstance(doc, dict):
                continue
            seen.arrivals.append((topic, float(received), doc))
        self.seen = seen
        return seen

    def ready(self) -> None:
        """Everything off, chiller running, interlock acknowledged and OK (as an operator starts a day)."""
        d = self.dcs
        d.wait_for("burnin/availability", lambda m: m.payload == b"online", timeout=60)
        d.wait_for("interlock/availability", lambda m: m.payload == b"online", timeout=90)
        d.command("julabo", "start")
        d.wait_for("julabo/status", lambda m: m.json()["state"] == "RUNNING", timeout=30)
        d.wait_for(
            "interlock/status", lambda m: not m.json()["conditions"] and not m.json()["lv_off_pending"], timeout=120
        )
        if d.status("interlock")["state"] != "OK":
            d.command("interlock", "acknowledge", operator="bench")
        d.wait_for("interlock/status", lambda m: m.json()["state"] == "OK", timeout=30)

    def run(self, recipe: str, timeout: float) -> dict[str, Any]:
        d = self.dcs
        reply = d.command("burnin", "start", recipe=recipe, operator="bench", comment="bench/burnin_bench.py")
        if not reply.get("ok"):
            raise RuntimeError(f"start refused: {reply}")
        deadline = time.time() + timeout
        while time.time() < deadline:
            st = d.command("burnin", "status")["result"]
            if st["state"] == "RUNNING" and st["step_kind"] == "prompt":
                self.seen.acks.append(time.time())
                d.command("burnin", "ack", operator="bench")
            if st["state"] in ("DONE", "ABORTED", "FAILED"):
                return st
            if st["state"] in ("HOLDING", "PAUSED") and not st.get("hold_auto"):
                raise RuntimeError(f"burn-in waits for an operator: {st}")
            time.sleep(0.5)
        raise RuntimeError(f"burn-in not done within {timeout} s: {d.command('burnin', 'status')['result']}")

    def close(self) -> None:
        if self.recorder.poll() is None:
            self.recorder.kill()
        self.dcs.close()
        stop_process(self.proc, timeout=60)
        self.log.close()


def cpu_seconds(root_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of every process under ``root_pid``, by program name."""
    tick = os.sysconf("SC_CLK_TCK")
    procs: dict[int, tuple[int, str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        name = next((Path(c.decode()).name for c in cmd[:4] if c and not c.startswith(b"-") and b"python" not in c),
                    "?")  # fmt: skip
        if b"-m" in cmd:
            name = cmd[cmd.index(b"-m") + 1].decode()
        procs[int(entry.name)] = (int(fields[1]), name, (int(fields[11]) + int(fields[12])) / tick)
    out: dict[str, float] = defaultdict(float)
    todo = [root_pid]
    while todo:
        pid = todo.pop()
        for child, (ppid, name, cpu) in procs.items():
            if ppid == pid:
                out[name] += cpu
                todo.append(child)
    return dict(out)


# ---------------------------------------------------------------------------- analysis


def step_windows(messages: list[tuple[str, float, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every step with its start and end (wall clock, the events' own ts)."""
    out: list[dict[str, Any]] = []
    for topic, ts, doc in messages:
        if topic != "burnin/event":
            continue
        if doc.get("kind") == "step_start":
            out.append({"index": doc["step"] - 1, "start": ts, "end": None})
        elif doc.get("kind") == "step_end" and out and out[-1]["index"] == doc["step"] - 1:
            out[-1]["end"], out[-1]["outcome"] = ts, doc.get("outcome")
    return out


def ready_at(step: Any, start: float, end: float, messages: list, scale: float, acks: list[float]) -> float:
    """Wall-clock time at which ``step``'s condition was met, seen from outside the sequencer."""
    p = step.params
    after = [(t, ts, d) for t, ts, d in messages if start - 1e-3 <= ts <= end + 1e-3]
    if step.kind == StepKind.WAIT:
        return start + p["duration"] / scale
    if step.kind == StepKind.IV_SCAN:
        return start + p["profile"].physical_s() / scale
    if step.kind == StepKind.PROMPT:
        return min((a for a in acks if a >= start), default=end)
    if step.kind == StepKind.CHILLER:
        want = "RUNNING" if p["action"] == "start" else "STOPPED"
        before = [d for t, ts, d in messages if t == "julabo/status" and ts < start]
        if before and before[-1].get("state") == want:
            return start
        return next((ts for t, ts, d in after if t == "julabo/status" and d.get("state") == want), end)
    if step.kind == StepKind.TEMPERATURE:
        sensor = p["sensor"].split(":", 1)[1]
        readings = [(ts, d["temperature"]) for t, ts, d in after if t == f"env/{sensor}"]
        stable = p["stable_for"] / scale
        since = None
        for ts, temp in readings:
            if abs(temp - p["target"]) <= p["tolerance"]:
                since = ts if since is None else since
                if ts - since >= stable:
                    return since + stable
            else:
                since = None
        return since + stable if since is not None else end
    if step.kind == StepKind.POWER:
        targets = TARGET_STATES[PowerAction(p["action"])]
        state: dict[str, str] = {}
        for t, ts, d in messages:
            if t.startswith("caen/status/module/") and ts <= end + 1e-3:
                state[t.rsplit("/", 1)[1]] = d.get("state")
                if ts >= start and all(state.get(m) in targets for m in step.modules):
                    return ts
        return end
    if step.kind == StepKind.CALIBRATION:
        busy = False
        for t, ts, d in after:
            if t == "ph2acf/status":
                if d.get("state") not in ("IDLE", "ERROR"):
                    busy = True
                elif busy:
                    return ts
        return end
    return end


def decided_at(topic: str, received: float, doc: dict[str, Any]) -> float:
    """The time that counts for what the sequencer adds: its own commands and events by its own clock (a command's
    ``deadline`` is sent + COMMAND_DEADLINE_S, an event's ``ts``), everything else when the broker delivered it
    to its subscribers (the recorder's arrival time; the sequencer is one of those subscribers). From a document's
    arrival to the sequencer's reaction is then the sequencer's own: reading it off its socket, the tick, the
    journal, the publication."""
    if "/cmd/" in topic and str(doc.get("id", "")).startswith("burnin-") and isinstance(doc.get("deadline"), float):
        return doc["deadline"] - COMMAND_DEADLINE_S
    if topic == "burnin/event" and isinstance(doc.get("ts"), (int, float)):
        return float(doc["ts"])
    return received


def _first(arrivals: list, after: float, until: float, pred) -> tuple[float, dict[str, Any]] | None:
    """The first document (received, doc) in ``(after, until]`` that satisfies ``pred(topic, doc)``."""
    for topic, recv, doc in arrivals:
        if after <= recv <= until and pred(topic, doc):
            return recv, doc
    return None


def _reply_at(arrivals: list, service: str, ident: Any, until: float) -> float | None:
    hit = _first(arrivals, 0.0, until, lambda t, d: t == f"{service}/reply" and d.get("id") == ident)
    return hit[0] if hit else None


def _iv_sequencer_s(step: Any, start: float, end: float, arrivals: list, scale: float) -> float:
    """Real seconds the sequencer added to an IV scan: on the module that finished last, every gap between the
    moment it could know (the status showing the point reached delivered, and its settling over) and its next
    command; then the gap between the last module seen off (and the last reply delivered) and the step's end."""
    prof = step.params["profile"]
    settle = prof.settle_s / scale
    window = [a for a in arrivals if start <= a[1] <= end]
    status = {m: [(r, d) for t, r, d in window if t == f"caen/status/module/{m}"] for m in step.modules}
    per_module: dict[str, tuple[float, float]] = {}  # module -> (sequencer s, last known moment)
    first_cmd = end
    for m in step.modules:
        cmds = [
            (r, d)
            for t, r, d in window
            if (t == "caen/cmd/set" and d.get("module") == m and d.get("param") == "V0Set")
            or (t == "caen/cmd/hv_off" and m in (d.get("modules") or []))
        ]
        if not cmds:
            continue
        first_cmd = min(first_cmd, cmds[0][0])
        added, known = 0.0, start
        for i, ((c_at, cmd), (n_at, nxt)) in enumerate(itertools.pairwise(cmds)):
            if not cmd.get("param"):  # hv_off: what follows is the V0Set restore, sent with it
                continue
            target = abs(float(cmd["value"]))
            if nxt.get("param") == "V0Set" and target == 0.0 and abs(float(nxt["value"])) > 0:
                continue  # V0Set 0 ... then the restore: not a scan point
            if target == 0.0 and nxt.get("param") is None and i > 0:
                # ramped down: hv_off once |VMon| <= SAFE_V (or the module is off)
                hit = next(((r, d) for r, d in status[m] if r >= c_at and (
                    d.get("state") in HV_IS_OFF or abs(d.get("hv_vmon") or 0.0) <= SAFE_V)), None)  # fmt: skip
                ready = hit[0] if hit else n_at
            else:
                hit = next(
                    ((r, d) for r, d in status[m]
                     if r >= c_at and abs(abs(d.get("hv_vmon") or 0.0) - target) <= prof.reach_tolerance_v),
                    None,
                )  # fmt: skip
                if hit is None:
                    continue
                reached_ts = hit[1].get("ts", hit[0])
                ready = max(hit[0], max(reached_ts, c_at) + settle)
            added += max(n_at - ready, 0.0)
            known = max(known, ready)
        off = [r for r, d in status[m] if r >= cmds[-1][0] and d.get("state") in HV_IS_OFF]
        per_module[m] = (added, max(known, off[0] if off else cmds[-1][0]))
    if not per_module:
        return end - start
    last_module = max(per_module, key=lambda m: per_module[m][1])
    replies = [r for t, r, d in window if t == "caen/reply" and str(d.get("id", "")).startswith("burnin")]
    known_end = max(per_module[last_module][1], max(replies, default=start))
    return max(first_cmd - start, 0.0) + per_module[last_module][0] + max(end - known_end, 0.0)


def sequencer_s(step: Any, start: float, end: float, messages: list, scale: float) -> float:
    """Real seconds between the moment the sequencer could know that ``step`` was done (the document or reply
    that said so was delivered by the broker, or its own timer ran out) and the step's end (``messages``:
    (topic, :func:`decided_at`, doc)): what the sequencer adds apart from the devices and the other services."""
    p = step.params
    window = [a for a in messages if start <= a[1] <= end]
    if step.kind == StepKind.WAIT:
        return max(end - (start + p["duration"] / scale), 0.0)
    if step.kind == StepKind.IV_SCAN:
        return _iv_sequencer_s(step, start, end, messages, scale)
    if step.kind == StepKind.PROMPT:
        hit = _first(window, start, end, lambda t, d: t == "burnin/cmd/ack")
        return end - hit[0] if hit else 0.0
    if step.kind == StepKind.CALIBRATION:
        busy, known = False, start
        for t, r, d in window:
            if t == "ph2acf/status":
                if d.get("state") not in ("IDLE", "ERROR"):
                    busy = True
                elif busy:
                    known = r
                    break
        return max(end - known, 0.0)
    if step.kind == StepKind.TEMPERATURE:
        sensor = p["sensor"].split(":", 1)[1]
        since = None
        for t, r, d in window:
            if t != f"env/{sensor}":
                continue
            ts = d.get("ts", r)
            if abs(d["temperature"] - p["target"]) <= p["tolerance"]:
                since = (ts, r) if since is None else since
                if ts - since[0] >= p["stable_for"] / scale:
                    break
            else:
                since = None
        known = max(since[0] + p["stable_for"] / scale, since[1]) if since else end
        return max(end - known, 0.0)
    if step.kind in (StepKind.POWER, StepKind.CHILLER):
        service = "caen" if step.kind == StepKind.POWER else "julabo"
        cmd = _first(window, start, end, lambda t, d: t.startswith(f"{service}/cmd/"))
        known = start
        if cmd is not None:
            known = max(known, _reply_at(messages, service, cmd[1].get("id"), end) or end)
        if step.kind == StepKind.POWER:
            targets = TARGET_STATES[PowerAction(p["action"])]
            state: dict[str, str] = {}
            reached = end
            for t, r, d in messages:
                if r > end:
                    break
                if t.startswith("caen/status/module/"):
                    state[t.rsplit("/", 1)[1]] = d.get("state")
                    if r >= start and all(state.get(m) in targets for m in step.modules):
                        reached = r
                        break
            known = max(known, reached)
        else:
            want = "RUNNING" if p["action"] == "start" else "STOPPED"
            hit = _first(messages, 0.0, end, lambda t, d: t == "julabo/status" and d.get("state") == want)
            before = [d for t, r, d in messages if t == "julabo/status" and r < start]
            if not (before and before[-1].get("state") == want):
                known = max(known, hit[0] if hit and hit[0] >= start else end)
        return max(end - known, 0.0)
    return 0.0


def analyse(recipe: Recipe, seen: Seen, scale: float) -> dict[str, Any]:
    messages = sorted(seen.messages, key=lambda x: x[1])
    arrivals = sorted(seen.arrivals, key=lambda x: x[1])
    windows = [w for w in step_windows(messages) if w["end"] is not None]
    decided = sorted(((t, decided_at(t, r, d), d) for t, r, d in arrivals), key=lambda x: x[1])
    per_kind: dict[str, dict[str, float]] = defaultdict(
        lambda: {"n": 0, "physical_s": 0.0, "added_s": 0.0, "sequencer_s": 0.0}
    )
    steps = []
    for w in windows:
        step = recipe.steps[w["index"]]
        ready = min(max(ready_at(step, w["start"], w["end"], messages, scale, seen.acks), w["start"]), w["end"])
        physical, added = (ready - w["start"]) * scale, (w["end"] - ready) * scale
        own = sequencer_s(step, w["start"], w["end"], decided, scale) * scale
        k = per_kind[step.kind.value]
        k["n"] += 1
        k["physical_s"] += physical
        k["added_s"] += added
        k["sequencer_s"] += own
        steps.append(
            {
                "step": w["index"] + 1,
                "name": step.name,
                "kind": step.kind.value,
                "physical_s": round(physical, 2),
                "added_s": round(added, 2),
                "sequencer_s": round(own, 2),
            }
        )
    gaps = sum(max(b["start"] - a["end"], 0.0) for a, b in itertools.pairwise(windows)) * scale
    physical = sum(k["physical_s"] for k in per_kind.values())
    added = sum(k["added_s"] for k in per_kind.values()) + gaps
    own = sum(k["sequencer_s"] for k in per_kind.values()) + gaps
    elapsed = (windows[-1]["end"] - windows[0]["start"]) * scale if windows else 0.0
    return {
        "steps_measured": len(windows),
        "elapsed_s": round(elapsed, 1),
        "physical_s": round(physical, 1),
        "added_s": round(added, 1),
        "added_pct": round(100 * added / physical, 3) if physical else None,
        "sequencer_added_s": round(own, 1),
        "sequencer_added_pct": round(100 * own / physical, 3) if physical else None,
        "stack_added_s": round(added - own, 1),
        "gaps_between_steps_s": round(gaps, 2),
        "added_real_ms_per_step": round(1000 * added / scale / max(len(windows), 1), 2),
        "by_kind": {
            k: {
                "n": v["n"],
                "physical_s": round(v["physical_s"], 1),
                "added_s": round(v["added_s"], 1),
                "added_real_ms_per_step": round(1000 * v["added_s"] / scale / v["n"], 2),
                "sequencer_s": round(v["sequencer_s"], 1),
                "sequencer_real_ms_per_step": round(1000 * v["sequencer_s"] / scale / v["n"], 2),
            }
            for k, v in sorted(per_kind.items())
        },
        "worst_steps": sorted(steps, key=lambda s: -s["added_s"])[:8],
    }


def hops(trace: Path) -> dict[str, Any]:
    """Where the real time goes, from the processes' own latency marks (``--trace``, one monotonic clock): a
    status document handed to MQTT by its service -> the sequencer's MQTT thread has it (by topic family); the
    sequencer sends a command -> the service has it; the sequencer's loop wakes -> its next command goes out."""
    marks = latencytrace.read(trace)
    sent = {}
    for t, _pid, tag in marks:
        if tag.startswith("status "):
            _, topic, ts = tag.split()
            sent[(topic, round(float(ts), 5))] = t
    delivered: dict[str, list[float]] = defaultdict(list)
    outs: list[float] = []
    cmds: list[float] = []
    wake_to_out: list[float] = []
    woke = None
    for t, _pid, tag in marks:
        parts = tag.split()
        if parts[0] == "in" and len(parts) == 4 and parts[2] != "None":
            at = sent.get((parts[1], round(float(parts[2]), 5)))
            if at is not None:
                family = "/".join(parts[1].split("/")[:3]) if "/status/" in parts[1] else parts[1]
                delivered[family].append((float(parts[3]) - at) * 1e3)
        elif parts[0] == "wake":
            woke = t
        elif parts[0] == "out":
            outs.append(t)
            if woke is not None:
                wake_to_out.append((t - woke) * 1e3)
                woke = None
        elif parts[0] == "cmd" and "/cmd/" in parts[1] and not parts[1].startswith("burnin/"):
            cmds.append(t)
    to_service = [(cmds[i] - o) * 1e3 for o in outs if (i := bisect.bisect_left(cmds, o)) < len(cmds)]

    def pct(values: list[float]) -> dict[str, Any]:
        v = sorted(values)
        return {"n": len(v), **{f"p{q}": round(v[min(len(v) - 1, int(q / 100 * len(v)))], 2) for q in (50, 90, 99)}}

    return {
        "status_to_sequencer_ms": {k: pct(v) for k, v in sorted(delivered.items()) if v},
        "sequencer_command_to_service_ms": pct(to_service) if to_service else None,
        "sequencer_wake_to_command_ms": pct(wake_to_out) if wake_to_out else None,
    }


def iv_result(recipe: Recipe, seen: Seen, scale: float) -> dict[str, Any]:
    """The IV step against its physical time, and the added real time per point."""
    iv = next(s for s in recipe.steps if s.kind == StepKind.IV_SCAN)
    phys = iv.params["profile"].physical_s()
    messages = sorted(seen.messages, key=lambda x: x[1])
    w = next(w for w in step_windows(messages) if w["index"] == iv.index)
    took = (w["end"] - w["start"]) * scale
    n = len(iv.params["profile"].points)
    scan = [d for t, ts, d in messages if t == "burnin/event" and d.get("kind") == "iv_scan"]
    return {
        "physical_s": phys,
        "took_s": round(took, 2),
        "longer_pct": round(100 * (took / phys - 1), 2),
        "points": n,
        "added_real_ms_per_point": round(1000 * (took - phys) / scale / n, 2),
        "outcomes": scan[-1].get("outcomes") if scan else None,
    }


def measure(args: argparse.Namespace, scale: float, var: Path, recipe_name: str) -> dict[str, Any]:
    load0 = os.getloadavg()
    bench = Bench(var, scale, args.run_seconds, trace=args.trace)
    try:
        bench.ready()
        settings = parse_settings({k: v for k, v in load_yaml(bench.paths["burnin"]).items() if k != "mqtt"})
        recipe = load_recipe((var / "recipes" / f"{recipe_name}.yml").read_text(), settings)
        t0, cpu0 = time.time(), cpu_seconds(bench.proc.pid)
        final = bench.run(recipe_name, timeout=3 * 3600)
        wall = time.time() - t0
        cpu1 = cpu_seconds(bench.proc.pid)
        cpu = {k: round((cpu1.get(k, 0.0) - cpu0.get(k, 0.0)) / wall * 100, 1) for k in sorted(cpu1)}
        time.sleep(0.5)
        seen = bench.collect()
    finally:
        if args.keep:
            bench.seen.dump(var / "seen.json")
        bench.close()
    return {
        "bench": f"burnin_{args.mode}",
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "time_scale": scale,
        "modules": len(MODULES),
        "recipe": recipe_name,
        "final_state": final["state"],
        "real_s": round(wall, 1),
        "loadavg_before": [round(x, 2) for x in load0],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_pct_during_run": cpu,
        "burnin_loop_latency_ms": final.get("loop_latency"),
        **analyse(recipe, seen, scale),
        **({"iv": iv_result(recipe, seen, scale)} if args.mode == "iv" else {}),
        **({"hops": hops(bench.trace)} if bench.trace else {}),
    }


def reanalyse(folder: Path, previous: dict[str, Any]) -> dict[str, Any]:
    """The figures again from a kept run (``--keep``): the same analysis, nothing re-run."""
    scale, name = previous["time_scale"], previous["recipe"]
    settings = parse_settings({k: v for k, v in load_yaml(folder / "burnin.yml").items() if k != "mqtt"})
    recipe = load_recipe((folder / "recipes" / f"{name}.yml").read_text(), settings)
    seen = Seen.load(folder / "seen.json")
    out = {**previous, **analyse(recipe, seen, scale)}
    if "iv" in previous:
        out["iv"] = iv_result(recipe, seen, scale)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("iv", "standard"))
    ap.add_argument("--time-scale", type=float, default=None, help="default: 5 (iv), 300 (standard)")
    ap.add_argument("--run-seconds", type=float, default=20.0, help="a simulated calibration run (simulated s)")
    ap.add_argument("--keep", action="store_true", help="keep the stack's folder (logs, every message seen)")
    ap.add_argument("--trace", action="store_true", help="latency marks of every process (trackerdcs.latencytrace)")
    ap.add_argument("--reanalyse", type=Path, metavar="FOLDER", help="analyse a kept run again (nothing is run)")
    args = ap.parse_args(argv)
    scale = args.time_scale or (5.0 if args.mode == "iv" else 300.0)
    if args.reanalyse:
        result = reanalyse(args.reanalyse, json.loads((args.reanalyse / "result.json").read_text()))
    else:
        var = Path(tempfile.mkdtemp(prefix=f"burnin-bench-{args.mode}-"))
        result = measure(args, scale, var, "iv-bench" if args.mode == "iv" else "standard-burnin")
        if args.keep:
            (var / "result.json").write_text(json.dumps(result, indent=2) + "\n")
            print(f"stack folder kept: {var}")
        else:
            shutil.rmtree(var, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"burnin_{args.mode}_x{result['time_scale']:g}.json"  # a reanalysed run: its own scale
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "worst_steps"}, indent=2))
    return 0 if result["final_state"] == "DONE" else 1


if __name__ == "__main__":
    sys.exit(main())
