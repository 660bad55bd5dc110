"""The burn-in journal: one JSON line per record, flushed and fsynced before the engine goes on.

``<state_dir>/active.jsonl`` holds the burn-in in progress; when it ends (DONE, ABORTED) the file is moved to
``<state_dir>/done/<uid>.jsonl``. After a restart :func:`replay` reads what was written and says where the
burn-in stood: the recipe as run, the steps with their outcomes and the step to come back to (the first one
that did not end ``done``/``skipped``). A torn last line (power cut mid-write) is ignored.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .engine import Info, StepRecord

log = logging.getLogger(__name__)


class Journal:
    """Append-only JSON lines with fsync."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "done").mkdir(exist_ok=True)
        self.path = self.dir / "active.jsonl"
        self._fh: Any = None

    def append(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            self._fh = self.path.open("a", encoding="utf-8")
        self._fh.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def begin(self) -> None:
        """A new burn-in: an old active journal must not be there (the caller checked)."""
        self.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def finish(self, uid: str) -> Path:
        """Move the active journal out of the way (the burn-in ended)."""
        self.close()
        target = self.dir / "done" / f"{uid}.jsonl"
        if self.path.exists():
            self.path.replace(target)
            fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return target

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return read_records(self.path)


def read_records(path: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            if n == len(lines) - 1:
                log.warning("journal %s: torn last line ignored", path)
                continue
            raise ValueError(f"journal {path} line {n + 1} is not JSON") from None
        if isinstance(rec, dict):
            records.append(rec)
    return records


@dataclass
class Replayed:
    """Where a journaled burn-in stood."""

    info: Info
    recipe_text: str
    modules: list[str]
    history: list[StepRecord] = field(default_factory=list)
    index: int = 0
    state: str = "RUNNING"
    ended: str | None = None  #: "done", "aborted", "failed" if the journal says the burn-in ended
    results: list[dict[str, Any]] = field(default_factory=list)


def replay(records: list[dict[str, Any]]) -> Replayed | None:
    """The burn-in a journal describes, or None if it has no start record."""
    start = next((r for r in records if r.get("rec") == "start"), None)
    if start is None:
        return None
    out = Replayed(
        info=Info(start["uid"], start.get("operator", ""), start.get("comment", ""), float(start.get("t", 0.0))),
        recipe_text=start["recipe_text"],
        modules=list(start.get("modules") or []),
    )
    open_step: StepRecord | None = None
    for r in records:
        kind = r.get("rec")
        if kind == "step_start":
            tries = sum(1 for h in out.history if h.index == r["index"]) + 1
            open_step = StepRecord(r["index"], r.get("name", ""), "", start=r.get("t"), tries=tries)
            out.history.append(open_step)
        elif kind == "step_end":
            rec = open_step if open_step is not None and open_step.index == r["index"] else None
            if rec is None:
                rec = StepRecord(r["index"], "", "", start=r.get("t"))
                out.history.append(rec)
            rec.end, rec.outcome, rec.detail = r.get("t"), r.get("outcome"), r.get("detail", "")
            open_step = None
            if r.get("outcome") in ("done", "skipped"):
                out.index = r["index"] + 1
        elif kind == "state":
            out.state = r.get("state", out.state)
        elif kind == "end":
            out.ended = r.get("outcome")
        elif kind == "result":
            out.results.append(r)
    if open_step is not None:  # interrupted mid-step
        open_step.outcome, open_step.detail = "interrupted", "service restarted"
        open_step.end = open_step.start
    return out
