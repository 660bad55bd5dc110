"""One simulated calibration run: progress, failure injection and result files, shared by the executables
and the TCP server (each decides names, run numbers and where results go, as the real programs do).

Behaviour knobs (environment variables, so the bridge can pass them without changing command lines):

* ``PH2ACF_SIM_DURATION`` seconds a run takes (default 20);
* ``PH2ACF_SIM_CRASH_AT`` percent at which the process dies like a C++ ``terminate`` (SIGABRT);
* ``PH2ACF_SIM_MATRIX`` inner-tracker pixel matrix ``ROWSxCOLS`` (default 336x432, a CROC);
* ``PH2ACF_SIM_STEPS`` number of progress steps (default 20);
* ``PH2ACF_SIM_RELEASE`` ``2019-2022`` or ``current`` (default): which progress format is printed.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .detector import ChipId, DetectorError, load_chips
from .histograms import IT_MATRIX, ChipTruth, write_results
from .releases import CURRENT, RELEASES


class SimError(Exception):
    """The run cannot start (unknown calibration, unreadable configuration)."""


@dataclass
class SimSettings:
    duration_s: float = 20.0
    crash_at: float | None = None
    matrix: tuple[int, int] = IT_MATRIX
    steps: int = 20
    release: str = CURRENT

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SimSettings:
        env = os.environ if env is None else env
        settings = cls()
        try:
            if env.get("PH2ACF_SIM_DURATION"):
                settings.duration_s = max(0.0, float(env["PH2ACF_SIM_DURATION"]))
            if env.get("PH2ACF_SIM_CRASH_AT"):
                settings.crash_at = float(env["PH2ACF_SIM_CRASH_AT"])
            if env.get("PH2ACF_SIM_MATRIX"):
                rows, cols = env["PH2ACF_SIM_MATRIX"].lower().split("x")
                settings.matrix = (int(rows), int(cols))
            if env.get("PH2ACF_SIM_STEPS"):
                settings.steps = max(1, int(env["PH2ACF_SIM_STEPS"]))
        except ValueError as exc:
            raise SimError(f"bad PH2ACF_SIM_* setting: {exc}") from None
        release = env.get("PH2ACF_SIM_RELEASE") or CURRENT
        if release not in RELEASES:
            raise SimError(f"PH2ACF_SIM_RELEASE must be one of {', '.join(RELEASES)}, not {release!r}")
        settings.release = release
        return settings


@dataclass
class RunResult:
    path: Path
    aborted: bool
    truths: list[ChipTruth]


def crash() -> None:
    """Die like an uncaught C++ exception: std::terminate -> abort() -> SIGABRT."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.abort()


class SimulatedRun:
    """A calibration (``maps_key`` chooses the per-channel maps) on the chips of ``config_file``."""

    def __init__(
        self,
        flavour: str,
        maps_key: str,
        config_file: str | Path,
        run: int,
        workdir: Path,
        settings: SimSettings,
        *,
        result_path: Path,
        progress_line: Callable[[float], str],
        log: Callable[[str], None] = print,
    ) -> None:
        self.flavour = flavour
        self.maps_key = maps_key
        try:
            self.xml_text, self.chips = load_chips(Path(workdir, config_file))
        except DetectorError as exc:
            raise SimError(str(exc)) from None
        self.config_file = Path(workdir, config_file)
        self.run = run
        self.workdir = Path(workdir)
        self.settings = settings
        self.result_path = result_path
        self.progress_line = progress_line
        self.log = log
        self.progress = 0.0
        self._write_lock = threading.Lock()

    @property
    def chip_list(self) -> list[ChipId]:
        return list(self.chips)

    def write(self, fraction: float) -> list[ChipTruth]:
        """Write the result file as it stands (``fraction`` of the triggers taken)."""
        with self._write_lock:
            return write_results(
                self.result_path,
                self.flavour,
                self.maps_key,
                self.run,
                self.chips,
                matrix=self.settings.matrix,
                fraction=fraction,
            )

    def execute(self, stop: threading.Event, on_crash: Callable[[], None] = crash) -> RunResult:
        """Run the scan (blocking) until done or ``stop`` is set; write the results either way."""
        step_s = self.settings.duration_s / self.settings.steps
        aborted = False
        for step in range(1, self.settings.steps + 1):
            if stop.wait(step_s):
                aborted = True
                break
            self.progress = 100.0 * step / self.settings.steps
            if self.settings.crash_at is not None and self.progress >= self.settings.crash_at:
                self.log("terminate called after throwing an instance of 'std::runtime_error'")
                self.log("  what():  [RD53FWInterface] Communication with the chip lost (simulated crash)")
                on_crash()
                return RunResult(self.result_path, True, [])
            self.log(self.progress_line(self.progress))
        fraction = max(self.progress, 1.0) / 100.0 if aborted else 1.0
        truths = self.write(fraction)
        return RunResult(self.result_path, aborted, truths)
