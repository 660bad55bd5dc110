"""One simulated calibration run: progress, failure injection and result files, shared by the executables
and the TCP server.

Behaviour knobs (environment variables, so the bridge can pass them without changing command lines):

* ``PH2ACF_SIM_DURATION`` seconds a run takes (default 20);
* ``PH2ACF_SIM_CRASH_AT`` percent at which the process dies like a C++ ``terminate`` (exit status 134);
* ``PH2ACF_SIM_MATRIX`` inner-tracker pixel matrix ``ROWSxCOLS`` (default 336x432, a CROC);
* ``PH2ACF_SIM_STEPS`` number of progress steps (default 20).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ph2acf_bridge.calibrations import Flavour, calibrations

from .detector import DetectorError, load_chips
from .histograms import IT_MATRIX, ChipTruth, write_register_files, write_results

CRASH_STATUS = 134


class SimError(Exception):
    """The run cannot start (unknown calibration, unreadable configuration)."""


@dataclass
class SimSettings:
    duration_s: float = 20.0
    crash_at: float | None = None
    matrix: tuple[int, int] = IT_MATRIX
    steps: int = 20

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
        return settings


@dataclass
class RunResult:
    path: Path
    aborted: bool
    truths: list[ChipTruth]


class SimulatedRun:
    """A calibration of ``flavour`` on the chips of ``config_file``, results below ``workdir``."""

    def __init__(
        self,
        flavour: Flavour,
        calibration: str,
        config_file: str | Path,
        run: int,
        workdir: Path,
        settings: SimSettings,
        log: Callable[[str], None] = print,
    ) -> None:
        table = calibrations(flavour)
        if calibration not in table:
            raise SimError(f"calibration '{calibration}' not recognised; available: {', '.join(table)}")
        self.flavour = flavour
        self.calibration = calibration
        self.name = table[calibration]
        try:
            self.xml_text, self.chips = load_chips(Path(workdir, config_file))
        except DetectorError as exc:
            raise SimError(str(exc)) from None
        self.config_file = Path(workdir, config_file)
        self.run = run
        self.workdir = Path(workdir)
        self.settings = settings
        self.log = log
        self.progress = 0.0

    @property
    def result_path(self) -> Path:
        if self.flavour == "it":
            return self.workdir / "Results" / f"Run{self.run:06d}_{self.name}.root"
        return self.workdir / "Results" / f"Run_{self.run}" / "Results.root"

    def execute(self, stop: threading.Event, crash: Callable[[], None] | None = None) -> RunResult:
        """Run the calibration (blocking) until done or ``stop`` is set; write the results either way."""
        self.log(f"Run {self.run} started")
        self.log(f"@@@ Calibration {self.calibration} on {len(self.chips)} chip(s), config {self.config_file} @@@")
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
                (crash or _crash)()
                return RunResult(self.result_path, True, [])
            self.log(f"\x1b[1m\x1b[32m>>> Progress: {self.progress:.1f}% <<<\x1b[0m")
        if aborted:
            self.log(f"Run {self.run} stopped by the user at {self.progress:.1f}%")
        fraction = max(self.progress, 1.0) / 100.0
        truths = write_results(
            self.result_path,
            self.flavour,
            self.calibration,
            self.run,
            self.chips,
            matrix=self.settings.matrix,
            fraction=fraction if aborted else 1.0,
        )
        self._write_side_files()
        self.log(f"Closing result file: {self.result_path.relative_to(self.workdir)}")
        return RunResult(self.result_path, aborted, truths)

    def _write_side_files(self) -> None:
        if self.flavour == "it":
            folder, prefix = self.workdir / "Results", f"Run{self.run:06d}_"
        else:
            folder, prefix = self.result_path.parent, ""
        shutil.copyfile(self.config_file, folder / f"{prefix}{self.config_file.name}")
        write_register_files(folder, prefix, self.chips)


def _crash() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(CRASH_STATUS)


def next_run_number(workdir: Path) -> int:
    """Take the run number from ``RunNumber.txt`` (0 if absent) and store the next one, like Ph2_ACF."""
    path = Path(workdir) / "RunNumber.txt"
    try:
        run = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        run = 0
    path.write_text(f"{run + 1}\n")
    return run
