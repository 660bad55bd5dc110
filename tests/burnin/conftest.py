"""Helpers for the burn-in sequencer's specifications (the pure core is fed World snapshots)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "services" / "burnin" / "recipes"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sim_stack_launcher: Any) -> Iterator[Any]:
    """One simulation stack per test file (test_stack_*.py), with the test's own sequencer."""
    from .stack_harness import open_stack

    with open_stack(tmp_path_factory, sim_stack_launcher) as running:
        yield running
