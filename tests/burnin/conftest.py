"""Helpers for the burn-in sequencer's specifications (the pure core is fed World snapshots)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "services" / "burnin" / "recipes"
