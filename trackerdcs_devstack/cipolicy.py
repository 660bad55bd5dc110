"""Test-suite policy for continuous integration: a skip is a failure when ``CI`` is set.

Tests that need podman, headless Chromium, Node-RED or influxd skip on a developer machine without them. On
CI (``CI=true``, as CI services set it) such a skip would silently hollow out the run, so this pytest hook
turns every skip into a failure that names the reason. Expected failures (``xfail``) are left alone.
Registered by tests/conftest.py; usable on its own with ``pytest -p trackerdcs_devstack.cipolicy``.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

from .localbroker import running_in_ci


def skip_reason(report: pytest.TestReport) -> str:
    """The reason text of a skipped test's report."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    """On CI, report a skipped test as failed, with the skip's reason."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and running_in_ci():
        report.outcome = "failed"
        report.longrepr = f"skipped on CI, which counts as a failure (CI={os.environ.get('CI')}): {skip_reason(report)}"
