"""On CI (``CI=true``) a skipped test is a failure that names its reason; elsewhere it stays a skip.

A machine without podman, Chromium, Node-RED or influxd skips the tests that need them; on CI that would
turn the run green while testing less. Checked on a small throw-away test module run by a real pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = """
import pytest

def test_passes():
    assert True

def test_needs_a_tool():
    pytest.skip("chromium not installed")

@pytest.mark.skipif(True, reason="podman is not installed")
def test_marked():
    pass

@pytest.mark.xfail(strict=True, reason="known defect")
def test_known_defect():
    assert False
"""


def run_sample(tmp_path: Path, ci: str | None) -> str:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "trackerdcs_devstack.cipolicy", "-p", "no:cacheprovider", "-q", "-rfs",
         "-c", os.devnull, "--rootdir", str(tmp_path), str(tmp_path / "test_sample.py")],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    return out.stdout + out.stderr


@pytest.mark.parametrize("ci", ["true", "1"])
def test_on_ci_a_skip_is_a_failure_with_its_reason(tmp_path, ci):
    out = run_sample(tmp_path, ci)
    # a skip in the call fails the test; a skipif (setup) errors it: either way the run is red
    assert "1 failed, 1 passed, 1 xfailed, 1 error" in out, out
    assert "chromium not installed" in out and "podman is not installed" in out, out


@pytest.mark.parametrize("ci", [None, "false"])
def test_off_ci_a_skip_stays_a_skip(tmp_path, ci):
    out = run_sample(tmp_path, ci)
    assert "1 passed, 2 skipped, 1 xfailed" in out, out
