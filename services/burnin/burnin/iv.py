"""IV scans on several modules in parallel (pure: readings in, commands out).

Every module walks the profile's points on its own: set the voltage, wait until VMon is there, settle, take
VMon/IMon/time/temperature as one point. A module stops on its own — compliance (|I| reaches its limit),
breakdown (the current rises steeply: d ln I / d ln |V| between two points above the profile's limit), a trip,
its LV going off, a lost status or a point it cannot reach — and is ramped down (V0Set 0 at the ramp speed,
then HV off), while the other modules go on. At the end every module is ramped down and its V0Set restored to
what it was before the scan (caen-fsm remembers ``set`` values for later switch-ons).

The crate's V0Set/VMon/IMon are magnitudes; points are stored with the stand's bias sign (``polarity``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .recipe import IvProfile
from .world import Command, Source

SAFE_V = 10.0  #: |VMon| below which a ramped-down module is switched off
REACH_MARGIN_S = 30.0  #: extra (real) time allowed to reach a point beyond |dV| / ramp speed x 2
STATE_GRACE_S = 5.0  #: (real) time a module may show a non-HV state after the scan switched HV on


class ScanOutcome(StrEnum):
    RUNNING = "running"
    DONE = "done"
    COMPLIANCE = "compliance"
    BREAKDOWN = "breakdown"
    TRIPPED = "tripped"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class Phase(StrEnum):
    START = "start"
    RAMP = "ramp"
    SETTLE = "settle"
    RAMP_DOWN = "ramp_down"
    FINISHED = "finished"


@dataclass
class IvPoint:
    set_v: float
    vmon: float
    imon: float  #: uA, with the bias sign
    ts: float | None  #: the status document's own time (wall clock)
    t: float  #: engine-clock time of the reading
    temperature: float | None


@dataclass
class ModuleScan:
    module: str
    compliance_ua: float
    restore_v0set: float | None
    phase: Phase = Phase.START
    index: int = 0
    since: float = 0.0  #: engine time the current phase began
    outcome: ScanOutcome = ScanOutcome.RUNNING
    reason: str = ""
    points: list[IvPoint] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "compliance_ua": self.compliance_ua,
            "points": [vars(p).copy() for p in self.points],
        }


class IvScan:
    """The state of one parallel scan. Call :meth:`begin`, then :meth:`tick` until :attr:`finished`."""

    def __init__(
        self,
        profile: IvProfile,
        compliance_ua: Mapping[str, float],
        polarity: int = -1,
        temperature_of: Mapping[str, str | None] | None = None,
        real_s: float = 1.0,
    ) -> None:
        self.profile = profile
        #: engine seconds per real second: the allowances for messages in flight (REACH_MARGIN_S, the grace for
        #: a module state) are real time, like the reply timeout, and grow with a simulation's time scale
        self.real_s = real_s
        self.polarity = polarity
        self.temperature_of = dict(temperature_of or {})
        self.scans = {m: ModuleScan(m, c, None) for m, c in compliance_ua.items()}
        self._finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return all(s.phase == Phase.FINISHED for s in self.scans.values())

    def finished_at(self, now: float) -> float:
        """Engine time the scan was first seen finished (``now`` on the first call)."""
        if self._finished_at is None:
            self._finished_at = now
        return self._finished_at

    def results(self) -> dict[str, dict[str, Any]]:
        return {m: s.document() for m, s in self.scans.items()}

    def begin(self, now: float, v0set: Mapping[str, float | None]) -> list[Command]:
        """First commands: remember V0Set, set the ramp speed and the first point, switch HV on."""
        out: list[Command] = []
        first = abs(self.profile.points[0])
        for m, s in self.scans.items():
            s.restore_v0set = v0set.get(m)
            s.phase, s.since = Phase.RAMP, now
            out.append(_set(m, "RUp", self.profile.ramp_v_per_s))
            out.append(_set(m, "RDWn", self.profile.ramp_v_per_s))
            out.append(_set(m, "V0Set", first))
        out.append(Command("caen", "hv_on", {"modules": list(self.scans)}, key="iv:hv_on"))
        return out

    def tick(self, now: float, modules: Mapping[str, Source], temps: Mapping[str, float | None]) -> list[Command]:
        """Advance every module with its newest status (``caen/status/module/<m>``)."""
        out: list[Command] = []
        for m, s in self.scans.items():
            out += self._tick_one(s, now, modules.get(m) or Source(), temps.get(m))
        return out

    def next_due(self) -> float:
        """Engine time at which a settling module takes its point (inf: none settling): the adapter wakes then."""
        return min(
            (s.since + self.profile.settle_s for s in self.scans.values() if s.phase == Phase.SETTLE),
            default=float("inf"),
        )

    def interrupt(self, reason: str) -> list[Command]:
        """Stop at once (pause, abort, skip): HV off for every module still on, V0Set restored."""
        out: list[Command] = []
        for s in self.scans.values():
            if s.phase != Phase.FINISHED:
                if s.outcome == ScanOutcome.RUNNING:
                    s.outcome, s.reason = ScanOutcome.INTERRUPTED, reason
                s.phase = Phase.FINISHED
                out.append(Command("caen", "hv_off", {"modules": [s.module]}, key=f"iv:off:{s.module}"))
                out += self._restore(s)
        return out

    # ------------------------------------------------------------------ one module
    def _stop(self, s: ModuleScan, now: float, outcome: ScanOutcome, reason: str) -> list[Command]:
        s.outcome, s.reason = outcome, reason
        s.phase, s.since = Phase.RAMP_DOWN, now
        if outcome in (ScanOutcome.TRIPPED, ScanOutcome.FAILED):  # nothing to ramp: make sure it is off
            s.phase = Phase.FINISHED
            return [Command("caen", "hv_off", {"modules": [s.module]}, key=f"iv:off:{s.module}"), *self._restore(s)]
        return [_set(s.module, "V0Set", 0.0)]

    def _restore(self, s: ModuleScan) -> list[Command]:
        if s.restore_v0set is None:
            return []
        return [_set(s.module, "V0Set", s.restore_v0set, key=f"iv:restore:{s.module}")]

    def _tick_one(self, s: ModuleScan, now: float, src: Source, temp: float | None) -> list[Command]:
        if s.phase in (Phase.FINISHED, Phase.START):
            return []
        state = src.get("state")
        vmon, imon = src.get("hv_vmon"), src.get("hv_imon")
        if s.phase == Phase.RAMP_DOWN:
            if state in ("OFF", "LV_ON", "TRIPPED") or (vmon is not None and abs(vmon) <= SAFE_V):
                s.phase = Phase.FINISHED
                return [Command("caen", "hv_off", {"modules": [s.module]}, key=f"iv:off:{s.module}"), *self._restore(s)]
            if now - s.since > abs(self.profile.points[-1]) / self.profile.ramp_v_per_s * 2 + self._margin():
                s.phase = Phase.FINISHED
                s.reason += "; ramp down too slow: switched off"
                return [Command("caen", "hv_off", {"modules": [s.module]}, key=f"iv:off:{s.module}"), *self._restore(s)]
            return []
        if state == "TRIPPED":
            return self._stop(s, now, ScanOutcome.TRIPPED, "HV channel tripped")
        if state in ("OFF", "DISCONNECTED", "MIXED", "LV_RAMP_DOWN") and now - s.since > STATE_GRACE_S * self.real_s:
            return self._stop(s, now, ScanOutcome.FAILED, f"module state {state}")
        if vmon is None or imon is None:
            return []
        target = abs(self.profile.points[s.index])
        if abs(imon) >= s.compliance_ua:
            return self._stop(
                s,
                now,
                ScanOutcome.COMPLIANCE,
                f"|I| = {abs(imon):.3g} uA reached the compliance "
                f"{s.compliance_ua:g} uA at {self.polarity * abs(vmon):.0f} V",
            )
        if s.phase == Phase.RAMP:
            if abs(abs(vmon) - target) <= self.profile.reach_tolerance_v and src.at >= s.since:
                # settling starts when the channel was there (the reading's own time), not when we heard of it
                s.phase, s.since = Phase.SETTLE, min(max(src.when, s.since), now)
                return []
            previous = abs(self.profile.points[s.index - 1]) if s.index else 0.0
            allowed = abs(target - previous) / self.profile.ramp_v_per_s * 2 + self._margin()
            if now - s.since > allowed:
                return self._stop(
                    s,
                    now,
                    ScanOutcome.FAILED,
                    f"{self.polarity * target:g} V not reached within "
                    f"{allowed:.0f} s (VMon {self.polarity * abs(vmon):.1f} V)",
                )
            return []
        # SETTLE. The newest status is the reading: caen-fsm republishes whenever VMon/IMon move beyond their
        # deadbands, so no newer document means no change beyond them (waiting for a fresh one would wait for
        # the heartbeat). The point keeps that document's own ts.
        if now - s.since < self.profile.settle_s:
            return []
        point = IvPoint(
            set_v=self.profile.points[s.index],
            vmon=self.polarity * abs(vmon),
            imon=self.polarity * abs(imon),
            ts=src.get("ts"),
            t=now,
            temperature=temp,
        )
        s.points.append(point)
        if self._breakdown(s):
            return self._stop(
                s,
                now,
                ScanOutcome.BREAKDOWN,
                f"current rising steeply at {point.set_v:g} V "
                f"({abs(s.points[-2].imon):.3g} -> {abs(point.imon):.3g} uA)",
            )
        s.index += 1
        if s.index >= len(self.profile.points):
            return self._stop(s, now, ScanOutcome.DONE, "all points measured")
        s.phase, s.since = Phase.RAMP, now
        return [_set(s.module, "V0Set", abs(self.profile.points[s.index]))]

    def _margin(self) -> float:
        return REACH_MARGIN_S * self.real_s

    def _breakdown(self, s: ModuleScan) -> bool:
        if len(s.points) < 2:
            return False
        a, b = s.points[-2], s.points[-1]
        va, vb, ia, ib = abs(a.set_v), abs(b.set_v), abs(a.imon), abs(b.imon)
        if va <= 0 or vb <= va or ib < self.profile.breakdown_min_ua or ia <= 0:
            return False
        slope = math.log(ib / ia) / math.log(vb / va)
        return slope > self.profile.breakdown_slope


def _set(module: str, param: str, value: float, key: str = "") -> Command:
    return Command(
        "caen",
        "set",
        {"module": module, "kind": "hv", "param": param, "value": round(value, 3)},
        key=key or f"iv:set:{module}:{param}",
    )
