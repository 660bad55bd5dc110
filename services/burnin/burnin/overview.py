"""What the operator UI's burn-in page shows besides ``burnin/status``, as retained documents (pure functions).

* ``burnin/status/steps``: every step of the expanded recipe with its latest outcome, so the page can list the
  whole burn-in (done, running, still to come) after a reload or a restart of Node-RED.
* ``burnin/status/iv/<module>``: the module's newest IV scan with its points, so the page can draw the curve.

Step numbers here are 1-based, as in ``burnin/status`` and the events (the archived IV documents count from 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .recipe import Recipe

#: a step detail longer than this is cut (the page shows one line per step)
DETAIL_CHARS = 160


def step_overview(recipe: Recipe, history: Sequence[Any], index: int, state: str, uid: str) -> dict[str, Any]:
    """All steps of ``recipe`` with the latest record of each from ``history`` (``StepRecord``-like objects).

    ``outcome`` is that record's outcome (``done``, ``skipped``, ``interrupted``), ``running`` for the current
    step while it runs or holds, ``paused`` for the current step of a paused burn-in, and ``None`` for a step
    that has not started. ``tries`` counts the starts of the step.
    """
    latest: dict[int, Any] = {}
    for rec in history:
        latest[rec.index] = rec
    steps = []
    for step in recipe.steps:
        rec = latest.get(step.index)
        outcome = rec.outcome if rec is not None else None
        current = step.index == index and state in ("RUNNING", "HOLDING", "PAUSED", "ABORTING")
        if current and (rec is None or rec.end is None or outcome == "interrupted"):
            outcome = "paused" if state == "PAUSED" else "running"
        steps.append(
            {
                "step": step.index + 1,
                "name": step.name,
                "kind": step.kind.value,
                "cycle": step.cycle,
                "estimate_s": round(step.estimate_s, 1),
                "outcome": outcome,
                "start": rec.start if rec is not None else None,
                "end": rec.end if rec is not None else None,
                "detail": (rec.detail or "")[:DETAIL_CHARS] if rec is not None else "",
                "tries": rec.tries if rec is not None else 0,
            }
        )
    return {"uid": uid, "recipe": recipe.name, "state": state, "steps": steps}


def iv_curve(module: str, scan: Mapping[str, Any], burnin: str | None = None) -> dict[str, Any] | None:
    """The document for ``burnin/status/iv/<module>`` from an IV scan record (as the engine records it and the
    archive keeps it: ``{"step", "profile", "modules": {module: {"outcome", "reason", "compliance_ua",
    "points"}}, "burnin", "t"}``); None when the scan has no such module."""
    result = (scan.get("modules") or {}).get(module)
    if not isinstance(result, Mapping):
        return None
    step = scan.get("step")
    return {
        "module": module,
        "burnin": scan.get("burnin") or burnin,
        "step": step + 1 if isinstance(step, int) else None,
        "profile": scan.get("profile"),
        "interrupted": scan.get("interrupted"),
        "outcome": result.get("outcome"),
        "reason": result.get("reason", ""),
        "compliance_ua": result.get("compliance_ua"),
        "points": [
            {k: p.get(k) for k in ("set_v", "vmon", "imon", "temperature", "ts")}
            for p in result.get("points") or []
            if isinstance(p, Mapping)
        ],
    }


def newest_curves(scans: Iterable[Mapping[str, Any]], burnin: str | None = None) -> dict[str, dict[str, Any]]:
    """Module -> the curve of its newest scan, from scan records in the order they were taken."""
    curves: dict[str, dict[str, Any]] = {}
    for scan in scans:
        for module in scan.get("modules") or {}:
            curve = iv_curve(module, scan, burnin)
            if curve is not None:
                curves[module] = curve
    return curves
