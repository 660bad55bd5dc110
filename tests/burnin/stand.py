"""A small stand model for the engine specifications: it answers the engine's commands the way the services'
contract says (docs/services/*.md) and turns its state into World snapshots. It is a test bench for the pure
core, not a simulator of a device; the integration with the real services is a separate test."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from burnin.world import Command, Reply, Source, World


@dataclass
class Mod:
    lv: bool = False
    hv_on: bool = False
    v0set: float = 300.0
    vmon: float = 0.0
    rate: float = 50.0
    tripped: bool = False
    breakdown_v: float = math.inf

    def current(self) -> float:  # uA: sqrt rise to 100 V then flat, steep above breakdown
        v = self.vmon
        i = 0.1 * math.sqrt(min(v, 100.0) / 100.0) if v > 0 else 0.0
        if v > self.breakdown_v:
            i *= math.exp((v - self.breakdown_v) / 5.0)
        return i

    def state(self) -> str:
        if self.tripped:
            return "TRIPPED"
        if not self.lv:
            return "OFF" if not self.hv_on else "MIXED"
        if self.hv_on:
            return "HV_ON" if abs(self.vmon - self.v0set) < 0.5 else "HV_RAMP_UP"
        return "LV_ON" if self.vmon < 1 else "HV_RAMP_DOWN"


@dataclass
class Stand:
    modules: dict[str, Mod] = field(default_factory=lambda: {"module_0": Mod(), "module_1": Mod()})
    chiller: str = "STOPPED"
    setpoint: float = 20.0
    bath: float = 20.0
    k_per_s: float = 0.5
    air_t: float = 20.0
    rh: float = 5.0
    interlock: str = "OK"
    ph2acf: str = "IDLE"
    run_left: float = 0.0
    last_run: dict[str, Any] | None = None
    status_names_last_run: bool = True  #: the bridge's status carries last_uid/last_run/last_outcome/last_error
    log: list[Command] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    offline: set[str] = field(default_factory=set)
    now: float = 0.0
    runs: int = 0
    journaled: list[dict[str, Any]] = field(default_factory=list)  #: journal records the engine produced
    published: dict[str, tuple[dict[str, Any], float]] = field(default_factory=dict)  #: module -> (doc, at)

    def apply(self, cmd: Command) -> Reply:
        self.log.append(cmd)
        if f"{cmd.service}/{cmd.name}" in self.refuse or cmd.service in self.offline:
            return Reply(False, "refused by the test")
        a = cmd.args
        if cmd.service == "caen":
            mods = (
                [self.modules[m] for m in a.get("modules") or self.modules]
                if "modules" in a or cmd.name != "set"
                else []
            )
            if cmd.name == "lv_on":
                for m in mods:
                    m.lv = True
            elif cmd.name == "hv_on":
                if any(not m.lv for m in mods):
                    return Reply(False, "HV on refused: LV is not on")
                for m in mods:
                    m.hv_on = not m.tripped
            elif cmd.name == "hv_off":
                for m in mods:
                    m.hv_on = False
            elif cmd.name == "lv_off":
                for m in mods:
                    m.hv_on = False
                    m.lv = False
            elif cmd.name == "set":
                m = self.modules[a["module"]]
                if a["param"] == "V0Set":
                    m.v0set = a["value"]
                elif a["param"] in ("RUp", "RDWn"):
                    m.rate = a["value"]
            return Reply(True, result={})
        if cmd.service == "julabo":
            if cmd.name == "start":
                self.chiller = "RUNNING"
            elif cmd.name == "stop":
                self.chiller = "STOPPED"
            elif cmd.name == "set_setpoint":
                self.setpoint = a["value"]
            return Reply(True, result={})
        if cmd.service == "ph2acf":
            if cmd.name == "start":
                self.runs += 1
                self.ph2acf, self.run_left = "RUNNING", 5.0
                self.last_run = {"uid": f"run-{self.runs}", "run": self.runs, "outcome": None}
                return Reply(True, result={"uid": f"run-{self.runs}"})
            if cmd.name == "status":
                return Reply(True, result={"state": self.ph2acf, "last": self.last_run})
            if cmd.name == "abort":
                if self.ph2acf == "IDLE":
                    return Reply(False, "no run to abort")
                self.ph2acf = "IDLE"
                self.last_run = {**(self.last_run or {}), "outcome": "aborted"}
                return Reply(True, result={})
        return Reply(False, "unknown")

    def advance(self, dt: float) -> None:
        self.now += dt
        for m in self.modules.values():
            target = m.v0set if (m.hv_on and m.lv) else 0.0
            step = m.rate * dt
            m.vmon = min(target, m.vmon + step) if m.vmon < target else max(target, m.vmon - step)
        if self.chiller == "RUNNING":
            d = self.setpoint - self.bath
            self.bath += max(-self.k_per_s * dt, min(self.k_per_s * dt, d))
        if self.ph2acf == "RUNNING":
            self.run_left -= dt
            if self.run_left <= 0:
                self.ph2acf = "IDLE"
                self.last_run = {**(self.last_run or {}), "outcome": "done"}

    def _module_status(self, name: str, m: Mod, stale: set[str]) -> Source:
        """As caen-fsm publishes it: a new document only when the state changes, VMon moves by more than
        0.05 V or IMon by more than 0.0005 uA (its deadbands), or the 30 s heartbeat is due."""
        doc = {
            "state": m.state(), "hv_vmon": m.vmon, "hv_imon": m.current(), "hv_channel": f"{name}_hv",
            "hv_v0set": m.v0set,
        }  # fmt: skip
        last = self.published.get(name)
        if (
            last is None
            or last[0]["state"] != doc["state"]
            or abs(last[0]["hv_vmon"] - doc["hv_vmon"]) > 0.05
            or abs(last[0]["hv_imon"] - doc["hv_imon"]) > 0.0005
            or self.now - last[1] >= 30.0
        ):
            # received a moment before the engine's tick (messages arrive between ticks, as in the service)
            last = ({**doc, "ts": self.now}, self.now - 0.001)
            self.published[name] = last
        return Source(last[0], age_s=1000.0 if "caen" in stale else self.now - last[1], at=last[1])

    def _last_run_fields(self) -> dict[str, Any]:
        if not self.status_names_last_run or self.last_run is None:
            return {}
        last = self.last_run
        return {f"last_{k}": last.get(k) for k in ("uid", "run", "outcome", "error")}

    def world(self, stale: set[str] = frozenset()) -> World:
        def src(doc: dict[str, Any], name: str) -> Source:
            return Source(doc, age_s=1000.0 if name in stale else 1.0, at=self.now)

        return World(
            online={n: n not in self.offline for n in ("caen", "julabo", "ph2acf", "interlock")},
            caen=src({"state": "X"}, "caen"),
            modules={n: self._module_status(n, m, stale) for n, m in self.modules.items()},
            julabo=src(
                {"state": self.chiller, "bath_temp": self.bath, "setpoint": self.setpoint, "active_setpoint": 1},
                "julabo",
            ),
            ph2acf=src({"state": self.ph2acf, "progress": 0, **self._last_run_fields()}, "ph2acf"),
            interlock=src({"state": self.interlock, "active": [] if self.interlock == "OK" else ["test"]}, "interlock"),
            env={"box": src({"temperature": self.air_t, "humidity": self.rh}, "env")},
        )


def run(engine, stand: Stand, seconds: float, dt: float = 0.25, until=None) -> None:
    """Advance stand and engine together, carrying commands and replies, for ``seconds`` or until ``until()``."""
    end = stand.now + seconds
    while stand.now < end:
        stand.advance(dt)
        engine.tick(stand.now, stand.world())
        pump(engine, stand)
        if until is not None and until():
            return


def pump(engine, stand: Stand) -> None:
    for _ in range(50):
        out = engine.drain()
        stand.journaled.extend(out.journal)
        if not out.commands:
            return
        for ident, cmd in out.commands:
            engine.on_reply(ident, stand.apply(cmd), stand.now)
