"""Latency marks for benchmarks: where the time of a reaction goes, across processes.

Off unless ``TRACKERDCS_LATENCY_TRACE`` names a file when the process starts; then :func:`mark` appends one
line per call, ``<time.perf_counter()> <pid> <tag>``. ``perf_counter`` is CLOCK_MONOTONIC on Linux, one clock
for every process on the machine, so a benchmark can line marks from several services up against its own.
Marks: every service ``status <topic> <ts>`` (a status document handed to MQTT) and ``cmd <topic>`` (a command
arrived); caen-fsm ``msg <topic>`` (a permit message arrived) and ``ca_flushed`` (CA puts sent); the burn-in
sequencer ``clock <wall time>`` (once), ``in <topic> <ts> <arrival>``, ``wake`` (its loop woke) and
``out <topic> <id>`` (a command sent). Used by ``bench/interlock_reaction.py`` and ``bench/burnin_bench.py
--trace``. Disabled, a mark costs one comparison.
"""

from __future__ import annotations

import os
import time

_PATH = os.environ.get("TRACKERDCS_LATENCY_TRACE") or None
_fd: int | None = None


def enabled() -> bool:
    """Whether marks are being written."""
    return _PATH is not None


def mark(tag: str) -> None:
    """Append ``tag`` with the time now (no-op unless enabled). ``tag`` must not contain a newline."""
    global _fd
    if _PATH is None:
        return
    now = time.perf_counter()
    if _fd is None:
        _fd = os.open(_PATH, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_fd, f"{now:.6f} {os.getpid()} {tag}\n".encode())


def read(path: str | os.PathLike[str]) -> list[tuple[float, int, str]]:
    """The marks in a trace file, in time order."""
    out: list[tuple[float, int, str]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            t, pid, tag = line.rstrip("\n").split(" ", 2)
            out.append((float(t), int(pid), tag))
    return sorted(out)
