"""Summarise a Ph2_ACF result file per chip with uproot: channel counts, dead and noisy channels, means.

Per-channel maps are recognised by Ph2_ACF's naming ``D_B(<b>)_O(<o>)_H(<h>)_<Quantity>_Chip(<c>)``; the
quantities understood are listed in :data:`QUANTITIES`. Inner-tracker files hold their maps as TCanvas objects
(``PixelAlive``, ``Threshold2D``, ``Noise2D``, ``Slope2D``): the histogram inside the canvas is used; a canvas uproot
cannot read is counted in ``unreadable`` and named in the error if nothing else could be read. Outer-tracker files
hold plain histograms. Rules (per chip, per map):

* noise: 0 means dead (no S-curve/fit); noisy = above median + ``noisy_sigma`` x robust sigma (1.4826 MAD);
* occupancy with a median of at least 0.01 (efficiency-like, e.g. PixelAlive): dead below 10 % of the median,
  noisy above 120 % of it; otherwise (noise scans): noisy above ``noise_occupancy_cut``, dead not measurable;
* threshold, gain, pedestal, offset: 0 means dead.

A channel counts once even if several maps flag it. Means and standard deviations exclude dead and noisy
channels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import uproot

MAP_NAME = re.compile(r"^D_B\((\d+)\)_O\((\d+)\)_H\((\d+)\)_([A-Za-z0-9]+)_Chip\((\d+)\)$")
QUANTITIES: dict[str, str] = {
    "PixelAlive": "occupancy",  # inner tracker (TCanvas)
    "Threshold2D": "threshold",
    "Noise2D": "noise",
    "Slope2D": "gain",
    "Occupancy": "occupancy",  # outer tracker (histograms)
    "Noise": "noise",
    "Pedestal": "pedestal",
    "Offset": "offset",
}


class SummaryError(ValueError):
    """The file cannot be read as a Ph2_ACF result file."""


@dataclass
class RunSummary:
    """Per-chip summaries (JSON-ready) and the per-channel arrays they were computed from."""

    chips: list[dict[str, Any]] = field(default_factory=list)
    channels: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    histograms: int = 0
    unreadable: list[str] = field(default_factory=list)

    def totals(self) -> dict[str, Any]:
        """Counts over all chips."""
        return {
            "chips": len(self.chips),
            "channels": sum(c["channels"] for c in self.chips),
            "dead": sum(c["dead"] or 0 for c in self.chips),
            "noisy": sum(c["noisy"] for c in self.chips),
            "histograms": self.histograms,
            "unreadable": len(self.unreadable),
        }

    def document(self) -> dict[str, Any]:
        """The ``summary`` field of a run document."""
        return {"totals": self.totals(), "chips": self.chips}


def _robust_sigma(values: np.ndarray) -> tuple[float, float]:
    median = float(np.median(values))
    return median, 1.4826 * float(np.median(np.abs(values - median)))


def flag_channels(
    quantity: str, values: np.ndarray, *, noisy_sigma: float = 5.0, noise_occupancy_cut: float = 1e-4
) -> tuple[np.ndarray | None, np.ndarray]:
    """Boolean masks (dead or None if not measurable, noisy) for one per-channel map (pure)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    nothing = np.zeros(values.shape, dtype=bool)
    if quantity == "noise":
        dead = values <= 0
        live = values[~dead]
        if live.size == 0:
            return dead, nothing
        median, sigma = _robust_sigma(live)
        return dead, (values > median + noisy_sigma * max(sigma, 1e-12)) & ~dead
    if quantity == "occupancy":
        median = float(np.median(values)) if values.size else 0.0
        if median >= 0.01:
            return values < 0.1 * median, values > 1.2 * median
        return None, values > noise_occupancy_cut
    return values <= 0, nothing


def _stats(values: np.ndarray, good: np.ndarray) -> tuple[float | None, float | None]:
    sel = values[good]
    if sel.size == 0:
        return None, None
    return float(sel.mean()), float(sel.std())


def _canvas_histogram(canvas: Any) -> Any | None:
    """The first histogram drawn in a TCanvas read by uproot, or None."""
    try:
        primitives = canvas.member("fPrimitives")
    except Exception:  # uproot models of TCanvas vary with the file's streamers
        return None
    for item in primitives:
        if getattr(item, "classname", "").startswith("TH") and hasattr(item, "values"):
            return item
    return None


def summarise(path: str | Path, *, noisy_sigma: float = 5.0, noise_occupancy_cut: float = 1e-4) -> RunSummary:
    """Read ``path`` and summarise every chip found in it."""
    try:
        root = uproot.open(path)
    except Exception as exc:  # uproot raises a variety of errors on bad files
        raise SummaryError(f"cannot open {path}: {exc}") from None
    summary = RunSummary()
    maps: dict[tuple[int, int, int, int], dict[str, np.ndarray]] = {}
    with root:
        for key, classname in root.classnames().items():
            if not (classname.startswith("TH") or classname == "TCanvas"):
                continue
            summary.histograms += 1
            name = key.rsplit("/", 1)[-1].split(";")[0]
            m = MAP_NAME.match(name)
            if not m or m.group(4) not in QUANTITIES:
                continue
            ident = (int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(5)))
            try:
                obj = root[key]
                hist = obj if classname.startswith("TH") else _canvas_histogram(obj)
            except Exception:
                hist = None
            if hist is None:
                summary.unreadable.append(name)
                continue
            values = hist.values()
            if values.ndim == 2:
                values = values.T  # stored x = column, y = row; keep rows x columns
            maps.setdefault(ident, {})[QUANTITIES[m.group(4)]] = np.asarray(values, dtype=np.float64).ravel()
    for ident in sorted(maps):
        board, og, hybrid, chip = ident
        quantities = maps[ident]
        n = max(v.size for v in quantities.values())
        dead = np.zeros(n, dtype=bool)
        noisy = np.zeros(n, dtype=bool)
        dead_measured = False
        for quantity, values in quantities.items():
            if values.size != n:
                continue
            d, z = flag_channels(quantity, values, noisy_sigma=noisy_sigma, noise_occupancy_cut=noise_occupancy_cut)
            if d is not None:
                dead |= d
                dead_measured = True
            noisy |= z
        noisy &= ~dead
        good = ~(dead | noisy)
        key = f"B{board}_O{og}_H{hybrid}_C{chip}"
        entry: dict[str, Any] = {
            "chip": key,
            "board": board,
            "optical_group": og,
            "hybrid": hybrid,
            "chip_id": chip,
            "channels": int(n),
            "dead": int(dead.sum()) if dead_measured else None,
            "noisy": int(noisy.sum()),
        }
        for quantity, values in sorted(quantities.items()):
            mean, std = _stats(values, good) if values.size == n else (None, None)
            entry[f"mean_{quantity}"] = mean
            entry[f"std_{quantity}"] = std
        summary.chips.append(entry)
        summary.channels[key] = {q: v.astype(np.float32) for q, v in quantities.items()}
        summary.channels[key]["dead"] = np.flatnonzero(dead).astype(np.int32)
        summary.channels[key]["noisy"] = np.flatnonzero(noisy).astype(np.int32)
    if not maps:
        if summary.unreadable:
            raise SummaryError(f"{path}: {len(summary.unreadable)} per-chip map(s) could not be read "
                               f"(e.g. {summary.unreadable[0]})")  # fmt: skip
        raise SummaryError(f"{path}: no per-chip maps found (D_B(b)_O(o)_H(h)_<Quantity>_Chip(c))")
    return summary
