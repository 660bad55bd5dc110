"""Simulated Ph2_ACF command-line executables: ``CMSITminiDAQ`` (inner tracker) and ``runCalibration`` (outer
tracker), behaving like the real ones where a stand depends on it:

CMSITminiDAQ
  * reads ``PH2ACF_BASE_DIR`` without checking it: unset, it dies at once (uncaught C++ exception, SIGABRT);
  * run number from ``RunNumber.txt`` (0 if absent), written back (+1) only when the run has finished;
  * results ``Results/Run%06d_<Name>.root``, a copy of the XML and chip register files next to them;
    log ``logs/CMSITminiDAQ%06d_<calib>.log``; last line ``@@@ End of CMSIT miniDAQ @@@``;
  * SIGINT kills it outright (no files closed, RunNumber.txt untouched) unless it runs with ``-s``, the only
    mode in which it installs a handler (then the partial results are written and it exits 130).

runCalibration
  * next run number = last line of ``RunNumbers.dat`` + 1 (0 if absent), appended when the run starts;
  * ``Run <N> started``, results ``Results/Run_<N>/Results.root``, ``Closing result file: …``;
  * SIGINT: writes its ROOT file, then aborts (status -6).

Progress lines follow ``PH2ACF_SIM_RELEASE`` (see :mod:`ph2acf_sim.releases`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from .releases import IT_CLI_CALIBRATIONS, OT_CLI_CALIBRATIONS, personality

SUPERVISED_ABORT_STATUS = 130


def _parser(prog: str, flavour: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=f"Simulated Ph2_ACF {prog} ({flavour.upper()})")
    parser.add_argument("-f", "--file", required=True, help="hardware description XML")
    parser.add_argument("-c", "--calib", required=True, help="calibration to run")
    parser.add_argument("-b", "--batch", action="store_true", help="batch mode (no graphics)")
    parser.add_argument("-r", "--reset", action="store_true", help="reset the back-end board first")
    parser.add_argument("-s", "--supervisor", action="store_true", help="supervised mode (installs a SIGINT handler)")
    parser.add_argument("-t", "--time", type=float, help="physics run time in seconds")
    return parser


class _Log:
    """stdout, and a log file once it is open."""

    def __init__(self) -> None:
        self.file = None

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        if self.file is not None:
            self.file.write(line + "\n")
            self.file.flush()


def _read_int(path: Path, last_line: bool = False) -> int | None:
    try:
        lines = [ln for ln in path.read_text().split("\n") if ln.strip()]
        return int((lines[-1] if last_line else lines[0]).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cmsit_minidaq(argv: list[str] | None = None) -> int:
    """One CMSITminiDAQ run in the current directory; returns the exit status."""
    args = _parser("CMSITminiDAQ", "it").parse_args(argv)
    if os.environ.get("PH2ACF_BASE_DIR") is None:
        print("terminate called after throwing an instance of 'std::logic_error'", file=sys.stderr)
        print("  what():  basic_string: construction from null is not valid", file=sys.stderr)
        from .simrun import crash

        crash()
    stop = threading.Event()
    if args.supervisor:
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    else:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    from .simrun import SimError, SimSettings, SimulatedRun, crash

    workdir = Path.cwd()
    log = _Log()
    try:
        settings = SimSettings.from_env()
        if args.calib not in IT_CLI_CALIBRATIONS:
            raise SimError(f"calibration '{args.calib}' not recognised; available: {', '.join(IT_CLI_CALIBRATIONS)}")
        run = _read_int(workdir / "RunNumber.txt") or 0
        name = IT_CLI_CALIBRATIONS[args.calib]
        result = workdir / "Results" / f"Run{run:06d}_{name}.root"
        sim = SimulatedRun("it", args.calib, args.file, run, workdir, settings, result_path=result,
                           progress_line=personality(settings.release).progress_line, log=log)  # fmt: skip
    except SimError as exc:
        print(f"ERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    (workdir / "logs").mkdir(exist_ok=True)
    log.file = (workdir / "logs" / f"CMSITminiDAQ{run:06d}_{args.calib}.log").open("w")
    log(f"@@@ Calibration {args.calib} on {len(sim.chips)} chip(s), configuration {args.file} @@@")
    outcome = sim.execute(stop, crash)
    from .histograms import write_register_files

    results = workdir / "Results"
    (results / f"Run{run:06d}_{Path(args.file).name}").write_text(sim.xml_text)
    write_register_files(results, f"Run{run:06d}_", sim.chips)
    log(f"Results saved in {result.relative_to(workdir)}")
    (workdir / "RunNumber.txt").write_text(f"{run + 1}\n")
    log("@@@ End of CMSIT miniDAQ @@@")
    return SUPERVISED_ABORT_STATUS if outcome.aborted else 0


def run_calibration(argv: list[str] | None = None) -> int:
    """One runCalibration run in the current directory; returns the exit status (or dies by SIGABRT)."""
    args = _parser("runCalibration", "ot").parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    from .simrun import SimError, SimSettings, SimulatedRun, crash

    workdir = Path.cwd()
    try:
        settings = SimSettings.from_env()
        if args.calib not in OT_CLI_CALIBRATIONS:
            raise SimError(f"calibration '{args.calib}' not recognised; available: {', '.join(OT_CLI_CALIBRATIONS)}")
        last = _read_int(workdir / "RunNumbers.dat", last_line=True)
        run = 0 if last is None else last + 1
        result = workdir / "Results" / f"Run_{run}" / "Results.root"
        sim = SimulatedRun("ot", args.calib, args.file, run, workdir, settings, result_path=result,
                           progress_line=personality(settings.release).progress_line, log=_Log())  # fmt: skip
    except SimError as exc:
        print(f"ERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    with (workdir / "RunNumbers.dat").open("a") as numbers:
        numbers.write(f"{run}\n")
    print(f"Run {run} started", flush=True)
    outcome = sim.execute(stop, crash)
    from .histograms import write_register_files

    (result.parent / Path(args.file).name).write_text(sim.xml_text)
    write_register_files(result.parent, "", sim.chips)
    print(f"Closing result file: {result.relative_to(workdir)}", flush=True)
    if outcome.aborted:
        crash()
    return 0


def cmsit_minidaq_main(argv: list[str] | None = None) -> None:
    """Console script ``CMSITminiDAQ -f CMSIT.xml -c <calibration>``."""
    sys.exit(cmsit_minidaq(argv))


def run_calibration_main(argv: list[str] | None = None) -> None:
    """Console script ``runCalibration -b -f <xml> -c <calibration>``."""
    sys.exit(run_calibration(argv))
