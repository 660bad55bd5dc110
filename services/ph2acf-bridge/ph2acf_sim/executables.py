"""Simulated Ph2_ACF command-line executables: ``CMSITminiDAQ`` (inner tracker) and ``runCalibration`` (outer
tracker). They run in the current directory like the real ones: ``RunNumber.txt`` gives the run number,
results go to ``Results/``, progress and log lines go to stdout. SIGINT/SIGTERM stop the run early; the
partial results are still written and the process exits with status 130.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from ph2acf_bridge.calibrations import Flavour

ABORTED_STATUS = 130


def _log(line: str) -> None:
    print(line, flush=True)


def _parser(prog: str, flavour: Flavour) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=f"Simulated Ph2_ACF {prog} ({flavour.upper()})")
    parser.add_argument("-f", "--file", required=True, help="hardware description XML")
    parser.add_argument("-c", "--calib", required=True, help="calibration to run")
    parser.add_argument("-b", "--batch", action="store_true", help="batch mode (no graphics)")
    parser.add_argument("-r", "--reset", action="store_true", help="reset the back-end board first")
    parser.add_argument("-s", "--save", action="store_true", help="save raw data (ignored)")
    return parser


def run_executable(prog: str, flavour: Flavour, argv: list[str] | None = None) -> int:
    """Parse ``argv`` like the real executable and run one simulated calibration; return the exit status."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        _log(f"Received signal {signal.Signals(signum).name}: stopping the run")
        stop.set()

    # installed before the heavy imports (numpy, uproot) so an early abort is never a KeyboardInterrupt
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    args = _parser(prog, flavour).parse_args(argv)
    from .simrun import SimError, SimSettings, SimulatedRun, next_run_number

    workdir = Path.cwd()
    try:
        settings = SimSettings.from_env()
        run = next_run_number(workdir)
        sim = SimulatedRun(flavour, args.calib, args.file, run, workdir, settings, log=_log)
    except SimError as exc:
        print(f"ERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    result = sim.execute(stop)
    return ABORTED_STATUS if result.aborted else 0


def cmsit_minidaq_main(argv: list[str] | None = None) -> None:
    """Console script ``CMSITminiDAQ -f CMSIT.xml -c <calibration>``."""
    sys.exit(run_executable("CMSITminiDAQ", "it", argv))


def run_calibration_main(argv: list[str] | None = None) -> None:
    """Console script ``runCalibration -b -f <xml> -c <calibration>``."""
    sys.exit(run_executable("runCalibration", "ot", argv))
