"""A failing deployment command (``podman play kube``, ``deploy/build-images``) fails the test with the
command's own error output in the report, not a bare exit status."""

from __future__ import annotations

import pytest

from .test_pod import run_checked


def test_a_failing_command_shows_its_stderr_in_the_test_report():
    script = "echo 'Error: kube play: image localhost/x:latest not known' >&2; echo partial; exit 125"
    with pytest.raises(pytest.fail.Exception) as failure:
        run_checked(["sh", "-c", script], timeout=10)
    report = str(failure.value)
    assert "exited with 125" in report
    assert "image localhost/x:latest not known" in report and "partial" in report


def test_a_command_allowed_to_fail_returns_its_result():
    result = run_checked(["sh", "-c", "echo gone >&2; exit 1"], timeout=10, check=False)
    assert result.returncode == 1 and result.stderr == "gone\n"
