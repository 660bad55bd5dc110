"""The stored run document, built from what is known about a run, free of I/O (specified in
tests/ph2acf/test_runplan.py). The bridge reads the result file and summarises it; this module only assembles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .calibrations import calibrations
from .runner import RunEnd
from .runplan import RunContext

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Stand:
    """What the document says about the installation."""

    stand: str
    flavour: str
    mode: str
    bridge_version: str


@dataclass(frozen=True)
class ResultFile:
    """What was found of the run's result file (None fields: absent or not summarised)."""

    info: dict[str, Any] | None = None  # name, path, bytes
    summary: dict[str, Any] | None = None
    summary_error: str | None = None


def run_document(
    ctx: RunContext,
    end: RunEnd,
    *,
    outcome: str,
    error: str | None,
    stop_ts: float,
    stand: Stand,
    result: ResultFile,
    conditions_end: dict[str, Any],
) -> dict[str, Any]:
    """The run document (schema :data:`SCHEMA_VERSION`, fields in docs/services/ph2acf-bridge.md)."""
    return {
        "schema": SCHEMA_VERSION,
        "uid": ctx.uid,
        "run": ctx.run,
        "stand": stand.stand,
        "calibration": ctx.calibration,
        "calibration_name": calibrations(stand.flavour).get(ctx.calibration),  # type: ignore[arg-type]
        "flavour": stand.flavour,
        "mode": stand.mode,
        "operator": ctx.operator,
        "comment": ctx.comment,
        "modules": ctx.modules,
        "config_file": str(ctx.config_file),
        "config_xml": ctx.config_xml,
        "start_ts": ctx.start_ts,
        "stop_ts": stop_ts,
        "duration_s": round(stop_ts - (ctx.start_ts or stop_ts), 3),
        "outcome": outcome,
        "error": error,
        "abort_reason": ctx.extra.get("abort_reason"),
        "exit_code": end.exit_code,
        "log_tail": end.log_tail,
        "result_file": result.info,
        "summary": result.summary,
        "summary_error": result.summary_error,
        "conditions": {"start": ctx.conditions_start, "end": conditions_end},
        "bridge_version": stand.bridge_version,
    }
