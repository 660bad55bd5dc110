"""A small process supervisor for the simulation stack: start in order, wait for readiness, restart on crash."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class ProcessSpec:
    """One supervised program: its command line, extra environment and an optional readiness check."""

    name: str
    argv: list[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    ready: Callable[[], bool] | None = None
    ready_timeout_s: float = 20.0
    restart: bool = True


@dataclass
class _Running:
    spec: ProcessSpec
    proc: subprocess.Popen[bytes]
    started: float
    restarts: int = 0
    backoff_s: float = 1.0


class Supervisor:
    """Starts :class:`ProcessSpec` programs with their output in ``logdir/<name>.log`` and keeps them alive."""

    def __init__(self, logdir: Path, base_env: Mapping[str, str] | None = None) -> None:
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.running: dict[str, _Running] = {}

    def _spawn(self, spec: ProcessSpec) -> subprocess.Popen[bytes]:
        logfile = open(self.logdir / f"{spec.name}.log", "ab")  # noqa: SIM115 - handed to the child
        env = {**self.base_env, **spec.env}
        try:
            return subprocess.Popen(
                spec.argv, env=env, cwd=spec.cwd, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            logfile.close()

    def start(self, spec: ProcessSpec) -> None:
        """Start ``spec`` and wait for its readiness check (raises RuntimeError if it dies or times out)."""
        log.info("starting %s: %s", spec.name, " ".join(spec.argv))
        proc = self._spawn(spec)
        self.running[spec.name] = _Running(spec, proc, time.monotonic())
        if spec.ready is None:
            return
        deadline = time.monotonic() + spec.ready_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{spec.name} exited with {proc.returncode}; see {self.logdir / spec.name}.log")
            with contextlib.suppress(Exception):
                if spec.ready():
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{spec.name} not ready after {spec.ready_timeout_s} s; see {self.logdir / spec.name}.log")

    def poll(self) -> None:
        """Restart programs that exited (with a growing back-off up to 30 s)."""
        now = time.monotonic()
        for name, run in self.running.items():
            code = run.proc.poll()
            if code is None or not run.spec.restart:
                continue
            if now - run.started < run.backoff_s:
                continue
            log.warning("%s exited with %s; restarting (restart %d)", name, code, run.restarts + 1)
            run.backoff_s = 1.0 if now - run.started > 60 else min(run.backoff_s * 2, 30.0)
            run.proc = self._spawn(run.spec)
            run.started = now
            run.restarts += 1

    def stop_all(self, timeout: float = 10.0) -> None:
        """SIGTERM everything in reverse start order, SIGKILL what is still alive after ``timeout``."""
        for run in reversed(list(self.running.values())):
            if run.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for run in self.running.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                run.proc.wait(remaining)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.proc.pid, signal.SIGKILL)
                run.proc.wait(5)
        self.running.clear()


def read_lines_until(proc: subprocess.Popen[str], marker: str, timeout: float, *, drain: bool = False) -> list[str]:
    """Read ``proc``'s text stdout line by line up to and including the first line containing ``marker``.

    The lines are read on a helper thread (no select() on a buffered stream, which misses lines that
    arrived in one burst), so a silent child cannot block the caller past ``timeout``. With ``drain`` the
    helper keeps reading (and dropping) everything after the marker, so a chatty child never fills the pipe.
    Raises RuntimeError with the output so far if the process closes its stdout or ``timeout`` passes first."""
    stream = proc.stdout
    assert stream is not None
    lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()

    def pump() -> None:
        with contextlib.suppress(OSError, ValueError):  # ValueError: the pipe was closed under us
            for line in stream:
                lines.put(line)
                if marker in line:
                    if drain:
                        for _ in stream:
                            pass
                    return
        lines.put(None)

    threading.Thread(target=pump, name="read-until", daemon=True).start()
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    why = f"not seen within {timeout} s"
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        if line is None:
            why = "not seen before the output ended"
            break
        seen.append(line)
        if marker in line:
            return seen
    raise RuntimeError(f"{marker!r} {why}; output: {''.join(seen)[-2000:]}")


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """Read ``proc``'s text stdout until a line containing ``marker``; return that line.

    Raises RuntimeError (with the last output) if the process closes its stdout or ``timeout`` passes first."""
    return read_lines_until(proc, marker, timeout)[-1]


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM ``proc`` and wait; SIGKILL it if it is still alive after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
