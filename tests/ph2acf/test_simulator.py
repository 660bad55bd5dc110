"""The simulated CMSITminiDAQ / runCalibration behave like Ph2_ACF's on the command line."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import uproot

from .conftest import BIN, sim_env


def run(exe: str, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / exe), *args], cwd=cwd, env=sim_env(**env), capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_cmsit_minidaq_numbers_runs_and_writes_root_results(it_workdir: Path) -> None:
    first = run("CMSITminiDAQ", ["-f", "CMSIT.xml", "-c", "scurve"], it_workdir)
    second = run("CMSITminiDAQ", ["-f", "CMSIT.xml", "-c", "pixelalive"], it_workdir)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert (it_workdir / "RunNumber.txt").read_text().strip() == "2"
    assert ">>> Progress: 100.0% <<<" in first.stdout
    assert "Results/Run000000_SCurve.root" in first.stdout
    assert first.stdout.strip().endswith("@@@ End of CMSIT miniDAQ @@@")
    assert (it_workdir / "logs" / "CMSITminiDAQ000001_pixelalive.log").exists()
    results = it_workdir / "Results"
    assert (results / "Run000000_CMSIT.xml").read_text() == (it_workdir / "CMSIT.xml").read_text()
    with uproot.open(results / "Run000001_PixelAlive.root") as f:
        occ = f["Detector/Board_0/OpticalGroup_0/Hybrid_0/Chip_1/D_B(0)_O(0)_H(0)_PixelAlive_Chip(1)"]
        assert occ.values().shape == (40, 48)  # x = columns, y = rows


def test_unknown_calibration_fails_with_a_message_and_no_results(it_workdir: Path) -> None:
    result = run("CMSITminiDAQ", ["-f", "CMSIT.xml", "-c", "warpdrive"], it_workdir)
    assert result.returncode == 1
    assert "calibration 'warpdrive' not recognised" in result.stderr
    assert not (it_workdir / "Results").exists()


def test_missing_configuration_file_fails(it_workdir: Path) -> None:
    result = run("CMSITminiDAQ", ["-f", "nope.xml", "-c", "scurve"], it_workdir)
    assert result.returncode == 1
    assert "cannot read configuration file" in result.stderr


def test_crash_injection_dies_mid_run_like_an_uncaught_exception(it_workdir: Path) -> None:
    result = run("CMSITminiDAQ", ["-f", "CMSIT.xml", "-c", "scurve"], it_workdir, PH2ACF_SIM_CRASH_AT="50")
    assert result.returncode == -signal.SIGABRT
    assert "terminate called" in result.stdout
    assert ">>> Progress: 33.3% <<<" in result.stdout and "66.7%" not in result.stdout
    assert not list((it_workdir / "Results").glob("*.root"))


def interrupt(exe: str, args: list[str], cwd: Path, marker: str, **env: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([str(BIN / exe), *args], cwd=cwd, env=sim_env(PH2ACF_SIM_DURATION="30", **env),
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if marker in line:
                break
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    finally:
        proc.kill()
    return proc


def test_sigint_kills_cmsit_minidaq_without_results_or_a_new_run_number(it_workdir: Path) -> None:
    (it_workdir / "RunNumber.txt").write_text("7\n")
    proc = interrupt("CMSITminiDAQ", ["-f", "CMSIT.xml", "-c", "pixelalive"], it_workdir, "@@@ Calibration")
    assert proc.returncode == -signal.SIGINT
    assert not (it_workdir / "Results" / "Run000007_PixelAlive.root").exists()
    assert (it_workdir / "RunNumber.txt").read_text().strip() == "7"


def test_only_supervised_cmsit_minidaq_handles_sigint(it_workdir: Path) -> None:
    proc = interrupt("CMSITminiDAQ", ["-s", "-f", "CMSIT.xml", "-c", "pixelalive"], it_workdir, "@@@ Calibration")
    assert proc.returncode == 130
    assert (it_workdir / "Results" / "Run000000_PixelAlive.root").exists()


def test_cmsit_minidaq_dies_without_ph2acf_base_dir(it_workdir: Path) -> None:
    env = sim_env()
    del env["PH2ACF_BASE_DIR"]
    result = subprocess.run([str(BIN / "CMSITminiDAQ"), "-f", "CMSIT.xml", "-c", "scurve"], cwd=it_workdir, env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == -signal.SIGABRT
    assert "terminate called" in result.stderr
    assert not (it_workdir / "Results").exists()


@pytest.mark.parametrize(("release", "line"), [("2019-2022", ">>>> Progress :  50.0% <<<<"),
                                               ("current", ">>> Progress: 50.0% <<<")])  # fmt: skip
def test_progress_lines_follow_the_release(it_workdir: Path, release: str, line: str) -> None:
    result = run("CMSITminiDAQ", ["-f", "CMSIT.xml", "-c", "scurve"], it_workdir, PH2ACF_SIM_RELEASE=release,
                 PH2ACF_SIM_STEPS="4")  # fmt: skip
    assert line in result.stdout


def test_run_calibration_numbers_runs_from_run_numbers_dat_and_saves_on_sigint(ot_workdir: Path) -> None:
    (ot_workdir / "RunNumbers.dat").write_text("3\n11\n")
    proc = interrupt("runCalibration", ["-b", "-f", "OT.xml", "-c", "pedenoise"], ot_workdir, "Run 12 started")
    assert proc.returncode == -signal.SIGABRT
    assert (ot_workdir / "Results/Run_12/Results.root").exists()
    assert (ot_workdir / "RunNumbers.dat").read_text().split() == ["3", "11", "12"]


def test_run_calibration_writes_the_outer_tracker_layout(ot_workdir: Path) -> None:
    result = run("runCalibration", ["-b", "-f", "OT.xml", "-c", "pedenoise"], ot_workdir)
    assert result.returncode == 0, result.stderr
    assert "Run 0 started" in result.stdout
    assert "Closing result file: Results/Run_0/Results.root" in result.stdout
    with uproot.open(ot_workdir / "Results/Run_0/Results.root") as f:
        noise = f["Detector/Board_0/OpticalGroup_0/Hybrid_1/CBC_7/D_B(0)_O(0)_H(1)_Noise_Chip(7)"]
        assert noise.values().shape == (254,)
