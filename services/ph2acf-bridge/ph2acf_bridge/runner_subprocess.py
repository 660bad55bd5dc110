"""Run ``CMSITminiDAQ``/``runCalibration`` as a child process in the Ph2_ACF working directory.

The child gets its own session (process group) so an abort reaches everything it spawned: SIGINT first,
SIGTERM after ``abort_grace_s``, SIGKILL after twice that. ``runCalibration`` handles SIGINT by writing its ROOT
file; ``CMSITminiDAQ`` (outside its ``-s`` mode) simply dies, without closing files and without writing
``RunNumber.txt`` (it does so only at the end of a run). So after an aborted run the bridge makes sure Ph2_ACF's
counter is past it (``RunNumber.txt``; for the outer tracker the last line of ``RunNumbers.dat``): the next run
never reuses the number or overwrites its files.

The child gets ``PH2ACF_BASE_DIR`` (``ph2acf.base_dir``) and ``$PH2ACF_BASE_DIR/lib`` in ``LD_LIBRARY_PATH``,
as Ph2_ACF's setup.sh would provide.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import subprocess
import threading
from pathlib import Path

from .calibrations import result_path
from .logparse import ErrorLine, ResultFile, RunStarted, parse_line, strip_ansi
from .runner import EventSink, RunEnd, RunnerError
from .settings import BridgeSettings

log = logging.getLogger(__name__)
TAIL_LINES = 100


def read_run_number(workdir: Path, flavour: str = "it") -> int:
    """The run number Ph2_ACF will use next: inner tracker ``RunNumber.txt`` (0 if absent), outer tracker the
    last line of ``RunNumbers.dat`` + 1 (0 if absent)."""
    try:
        if flavour == "ot":
            lines = [ln for ln in (workdir / "RunNumbers.dat").read_text().splitlines() if ln.strip()]
            return int(lines[-1].split()[0]) + 1
        return int((workdir / "RunNumber.txt").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def child_environment(settings: BridgeSettings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a Ph2_ACF child: ours, ``subprocess.env``, PH2ACF_BASE_DIR and its ``lib`` folder."""
    env = dict(os.environ if base is None else base)
    env.update(settings.subprocess.env)
    if settings.base_dir:
        env["PH2ACF_BASE_DIR"] = settings.base_dir
        lib = str(Path(settings.base_dir) / "lib")
        paths = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
        env["LD_LIBRARY_PATH"] = ":".join([lib, *(p for p in paths if p != lib)])
    return env


class SubprocessRunner:
    """One run of the configured executable."""

    mode = "subprocess"

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.workdir = settings.workdir.resolve()
        self.proc: subprocess.Popen[str] | None = None
        self.calibration = ""
        self.run: int | None = None
        self._abort = threading.Event()
        self._lock = threading.Lock()

    def command_line(self, calibration: str, config_file: Path) -> list[str]:
        """The argv for ``calibration`` on ``config_file`` (``{calibration}``/``{config_file}`` substituted)."""
        values = {"calibration": calibration, "config_file": str(config_file)}
        return [self.settings.subprocess.executable, *(a.format(**values) for a in self.settings.subprocess.args)]

    def launch(self, calibration: str, config_file: Path) -> int | None:
        self.calibration = calibration
        self.run = read_run_number(self.workdir, self.settings.flavour)
        argv = self.command_line(calibration, config_file)
        env = child_environment(self.settings)
        log.info("launching %s in %s", " ".join(argv), self.workdir)
        try:
            with self._lock:
                self.proc = subprocess.Popen(
                    argv,
                    cwd=self.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    errors="replace",
                    bufsize=1,
                    start_new_session=True,
                )
        except OSError as exc:
            raise RunnerError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
        if self._abort.is_set():
            self._signal_abort()
        return self.run

    def follow(self, on_event: EventSink) -> RunEnd:
        assert self.proc is not None and self.proc.stdout is not None
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        end = RunEnd(run=self.run)
        last_error: str | None = None
        for raw in self.proc.stdout:
            line = strip_ansi(raw)
            if not line:
                continue
            tail.append(line)
            log.debug("ph2acf> %s", line)
            for event in parse_line(line):
                if isinstance(event, RunStarted):
                    end.run = event.run
                elif isinstance(event, ResultFile):
                    end.result_file = self.workdir / event.path
                elif isinstance(event, ErrorLine):
                    last_error = event.message
                on_event(event)
        end.exit_code = self.proc.wait()
        end.log_tail = list(tail)
        end.aborted = self._abort.is_set()
        if end.result_file is None and end.run is not None:
            with contextlib.suppress(KeyError):
                expected = self.workdir / result_path(self.settings.flavour, self.calibration, end.run)  # type: ignore[arg-type]
                if expected.exists():
                    end.result_file = expected
        if end.aborted and end.run is not None:
            self._keep_run_number(end.run)
        if end.exit_code != 0 and not end.aborted:
            reason = _describe_exit(end.exit_code)
            end.error = f"{Path(self.settings.subprocess.executable).name} {reason}" + (
                f": {last_error}" if last_error else ""
            )
        return end

    def _keep_run_number(self, run: int) -> None:
        """After an aborted run: make sure Ph2_ACF's own counter is past ``run`` (``RunNumber.txt`` for the inner
        tracker, the last line of ``RunNumbers.dat`` for the outer tracker), so the number is never reused."""
        flavour = self.settings.flavour
        if read_run_number(self.workdir, flavour) > run:
            return
        if flavour == "it":
            log.warning("aborted run %d left RunNumber.txt behind: setting it to %d", run, run + 1)
            path = self.workdir / "RunNumber.txt"
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(f"{run + 1}\n")
            tmp.replace(path)
        else:
            log.warning("aborted run %d is not in RunNumbers.dat: appending it", run)
            with (self.workdir / "RunNumbers.dat").open("a") as numbers:
                numbers.write(f"{run}\n")

    def abort(self) -> None:
        self._abort.set()
        with self._lock:
            if self.proc is not None:
                self._signal_abort()

    def _signal_abort(self) -> None:
        proc = self.proc
        assert proc is not None
        grace = self.settings.subprocess.abort_grace_s

        def escalate() -> None:
            for sig, wait_s in ((signal.SIGINT, grace), (signal.SIGTERM, grace), (signal.SIGKILL, None)):
                if proc.poll() is not None:
                    return
                log.warning("abort: sending %s to process group %d", sig.name, proc.pid)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)
                if wait_s is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(wait_s)

        threading.Thread(target=escalate, name="ph2acf-abort", daemon=True).start()


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exited with status {code}"
