"""Start-up self-check: what the service learnt from the IOC for every channel, and whether it may run (pure).

Once every PV has connected and sent a value (or the IOC answers but some PVs never connect), the service
checks, per channel, what it learnt against what it needs: every enum word it writes or reads (Pw Off/On, PDwn
Kill/Ramp, ImRange High/Low, the crate clear's Yes) must be among the IOC's labels (through the flavour's
aliases); VMon/IMon must be in the units the service works in (EGU read from the IOC, or the flavour's fixed
units); every PV must exist. A problem refuses the start with one clear message; what was learnt is logged and
published in the service's health, grouped by channels that learnt the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .flavour import ENUM_WORDS, SERVICE_UNITS, UNIT_SPELLINGS
from .fsm import ChannelModel, Plant

#: Most problems listed in the error message and the health document.
MAX_LISTED = 12


@dataclass
class SelfCheck:
    """The outcome of the self-check."""

    flavour: str
    status_form: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def health(self) -> dict[str, Any]:
        """The ``selfcheck`` entry of the health document."""
        return {
            "ok": self.ok,
            "flavour": self.flavour,
            "status_form": self.status_form,
            "problems": self.problems[:MAX_LISTED],
            "problems_total": len(self.problems),
            "warnings": self.warnings,
            "learned": self.groups,
        }

    def error(self) -> str:
        """One message for the operator naming what is missing."""
        more = len(self.problems) - MAX_LISTED
        listed = "; ".join(self.problems[:MAX_LISTED]) + (f"; and {more} more" if more > 0 else "")
        return f"IOC self-check failed (flavour {self.flavour}): {listed}"


def learned(ch: ChannelModel) -> dict[str, Any]:
    """What one channel learnt from the IOC (the keys of the grouping, without the channel's own names)."""
    fl = ch.flavour
    out: dict[str, Any] = {
        "kind": ch.cfg.kind.value,
        "status_form": fl.status.form,
        "labels": {p: list(ch.labels[p]) for p in sorted(ch.labels) if not p.startswith("Status")},
    }
    if fl.status.form == "highest" and "Status" in ch.labels:
        out["status_labels"] = list(ch.labels["Status"])
    if fl.units == "egu":
        out["egu"] = {p: ch.units.get(p) for p in SERVICE_UNITS if p in ch.read_pvs}
    else:
        out["units_fixed"] = {p: _fixed(fl.fixed_units, p, ch.cfg.kind.value) for p in SERVICE_UNITS}
    if ch.cfg.polarity < 0:
        out["negative"] = sorted(ch.cfg.signed)
    return out


def _fixed(fixed: Any, param: str, kind: str) -> str | None:
    return fixed.get(f"{param}.{kind}", fixed.get(param))


def channel_problems(ch: ChannelModel) -> list[str]:
    """What the service needs from this channel and did not learn."""
    problems = []
    fl = ch.flavour
    for key, pv in ch.pvs.items():
        param = key.removesuffix("@w")
        if param in ENUM_WORDS:
            labels = ch.labels.get(key)
            if labels is None:
                problems.append(f"{pv}: no enum labels")
                continue
            for word in ENUM_WORDS[param]:
                if fl.find(param, labels, word) is None:
                    problems.append(f"{pv}: no label for '{word}' (IOC offers {', '.join(labels)})")
    if fl.units == "egu":
        for param, kinds in SERVICE_UNITS.items():
            if param not in ch.read_pvs:
                continue
            want, got = kinds[ch.cfg.kind], ch.units.get(param)
            if got is None or got not in UNIT_SPELLINGS[want]:
                problems.append(
                    f"{ch.read_pvs[param]}: EGU {got!r}, the service works in {want} (no rescaling; fix the IOC's "
                    "EGU or use a flavour with fixed units)"
                )
    return problems


def run(plant: Plant, missing: list[str] | None = None) -> SelfCheck:
    """Check every channel of ``plant`` (all PVs read once); ``missing``: PVs that never connected."""
    fl = plant.flavour
    check = SelfCheck(fl.name, fl.status.form)
    for pv in missing or []:
        check.problems.append(f"{pv}: no such PV (never connected while the IOC answered)")
    if fl.partial_status:
        check.warnings.append(
            "Status is a highest-bit enum: only the highest set bit is known; a condition bit (OVC, OVV, UNV, "
            "MAXV, EXT_DIS) hides whether the output is on and reads ERROR, a trip under a higher fault bit reads "
            "ERROR, not TRIPPED"
        )
    if plant.clear_alarm_pv is None:
        check.warnings.append("the IOC has no crate-level clear: clear_alarms is refused, clear trips at the crate")
    groups: dict[str, dict[str, Any]] = {}
    for ch in plant.channels.values():
        if missing is None or ch.connected:
            check.problems += channel_problems(ch)
        facts = learned(ch)
        key = repr(sorted(facts.items()))
        group = groups.setdefault(key, {**facts, "channels": [], "readbacks": _names(ch)})
        group["channels"].append(ch.name)
    check.groups = list(groups.values())
    return check


def _names(ch: ChannelModel) -> dict[str, Any]:
    """The PV names of the group's first channel (read, and written where different)."""
    return {
        "read": dict(ch.read_pvs),
        "write": {p: pv for p, pv in ch.write_pvs.items() if pv != ch.read_pvs.get(p)},
    }


def log_lines(check: SelfCheck) -> list[str]:
    """The self-check as log lines: one per group of channels that learnt the same."""
    lines = [f"IOC self-check: flavour {check.flavour}, Status form {check.status_form}"]
    for g in check.groups:
        names = g["channels"]
        shown = ", ".join(names[:4]) + (f" (+{len(names) - 4})" if len(names) > 4 else "")
        labels = "; ".join(f"{p} {'/'.join(v)}" for p, v in g["labels"].items())
        units = g.get("egu") or g.get("units_fixed")
        source = "EGU" if "egu" in g else "fixed units"
        example = g["readbacks"]["read"]
        status_pv = example.get("Status") or next((v for k, v in example.items() if k.startswith("Status")), None)
        lines.append(
            f"  {len(names)} {g['kind']} channel(s) [{shown}]: labels {labels}; {source} "
            f"{', '.join(f'{p} {u}' for p, u in (units or {}).items())}; e.g. VMon read from {example.get('VMon')}, "
            f"Status from {status_pv}"
            + (f"; negative board ({', '.join(g['negative'])} written < 0)" if g.get("negative") else "")
        )
    return lines
