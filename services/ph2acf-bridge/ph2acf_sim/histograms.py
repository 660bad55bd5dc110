"""Plausible calibration histograms, written as real ROOT files with uproot.

Each chip gets per-channel maps (TH2D rows x columns for inner-tracker pixel chips, TH1D over the strips for
outer-tracker chips) and distributions (TH1D). A few channels per chip are made dead or noisy on purpose;
:class:`ChipTruth` records which, so tests can check the bridge's summary against what was injected.

Histogram paths follow Ph2_ACF's layout ``Detector/Board_<b>/OpticalGroup_<o>/Hybrid_<h>/<Chip|CBC>_<c>/`` and
its naming ``D_B(<b>)_O(<o>)_H(<h>)_<Quantity>_Chip(<c>)``. Inner-tracker maps carry the names real files use
(``PixelAlive``, ``Threshold2D``, ``Noise2D``, ``Slope2D``); real files wrap each map in a TCanvas of that name,
which uproot cannot write, so the simulator stores the map itself under the canvas's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import uproot

from .detector import ChipId

IT_MATRIX = (336, 432)  # rows x columns of a CROC pixel chip
OT_STRIPS = 254  # channels of a CBC

#: per-channel quantities written for each calibration
IT_MAPS: dict[str, tuple[str, ...]] = {
    "pixelalive": ("PixelAlive",),
    "noise": ("PixelAlive",),
    "scurve": ("Threshold2D", "Noise2D"),
    "threqu": ("Threshold2D", "Noise2D"),
    "thrmin": ("Threshold2D", "Noise2D"),
    "thradj": ("Threshold2D", "Noise2D"),
    "gainopt": ("Slope2D", "Noise2D"),
    "gain": ("Slope2D", "PixelAlive"),
    "latency": ("PixelAlive",),
    "injdelay": ("PixelAlive",),
    "clkdelay": ("PixelAlive",),
    "physics": ("PixelAlive",),
}
OT_MAPS: dict[str, tuple[str, ...]] = {
    "pedenoise": ("Pedestal", "Noise"),
    "noiseOT": ("Pedestal", "Noise"),
    "calibration": ("Offset",),
    "calibrationandpedenoise": ("Offset", "Pedestal", "Noise"),
    "takedata": ("Occupancy",),
}


def maps_for(flavour: str, calibration: str) -> tuple[str, ...]:
    """The per-channel maps ``calibration`` writes (an occupancy map for anything not listed)."""
    if flavour == "it":
        return IT_MAPS.get(calibration, ("PixelAlive",))
    return OT_MAPS.get(calibration, ("Occupancy",))


@dataclass
class ChipTruth:
    """What the simulator injected into one chip: channel indices (flattened) of dead and noisy channels."""

    chip: ChipId
    channels: int
    dead: set[int] = field(default_factory=set)
    noisy: set[int] = field(default_factory=set)


def _seed(run: int, chip: ChipId) -> int:
    return (run * 1_000_003 + chip.board * 10_007 + chip.optical_group * 1_009 + chip.hybrid * 101 + chip.chip) % 2**32


def _quantity(
    name: str,
    shape: tuple[int, ...],
    rng: np.random.Generator,
    dead: np.ndarray,
    noisy: np.ndarray,
    *,
    noise_scan: bool,
    fraction: float,
) -> np.ndarray:
    """Values of one per-channel quantity with dead channels at 0 and noisy ones clearly out of the core."""
    n = int(np.prod(shape))
    if name in ("PixelAlive", "Occupancy"):
        if noise_scan:
            values = rng.binomial(1_000_000, 2e-7, n) / 1e6  # noise occupancy per trigger
            values[noisy] = rng.uniform(1e-3, 1e-2, noisy.size)
        else:
            values = rng.binomial(100, 0.999, n) / 100.0 * fraction
            values[noisy] = rng.uniform(1.5, 3.0, noisy.size) * fraction
    elif name == "Threshold2D":
        values = rng.normal(300.0, 25.0, n)
    elif name == "Noise2D":
        values = rng.normal(40.0, 4.0, n).clip(24.0, 56.0)  # core within 4 sigma
        values[noisy] = rng.uniform(120.0, 200.0, noisy.size)
    elif name == "Slope2D":
        values = rng.normal(7.5, 0.4, n)
    elif name == "Pedestal":
        values = rng.normal(590.0, 6.0, n)
    elif name == "Noise":
        values = rng.normal(5.0, 0.35, n).clip(3.6, 6.4)
        values[noisy] = rng.uniform(12.0, 20.0, noisy.size)
    elif name == "Offset":
        values = rng.normal(128.0, 9.0, n).clip(1, 255)
    else:  # pragma: no cover - table and generator out of sync
        raise ValueError(name)
    values[dead] = 0.0
    return values.reshape(shape)


def _name(chip: ChipId, quantity: str) -> str:
    return f"D_B({chip.board})_O({chip.optical_group})_H({chip.hybrid})_{quantity}_Chip({chip.chip})"


def chip_dir(chip: ChipId, flavour: str) -> str:
    """The ROOT directory of ``chip``."""
    kind = "Chip" if flavour == "it" else chip.kind
    return f"Detector/Board_{chip.board}/OpticalGroup_{chip.optical_group}/Hybrid_{chip.hybrid}/{kind}_{chip.chip}"


def write_results(
    path: Path,
    flavour: str,
    calibration: str,
    run: int,
    chips: list[ChipId],
    *,
    matrix: tuple[int, int] = IT_MATRIX,
    fraction: float = 1.0,
) -> list[ChipTruth]:
    """Write the ROOT file of one simulated calibration and return the injected truth per chip.

    ``fraction`` < 1 models a run stopped early (occupancies scale with the triggers taken).
    """
    maps = maps_for(flavour, calibration)
    shape: tuple[int, ...] = matrix if flavour == "it" else (OT_STRIPS,)
    n = int(np.prod(shape))
    noise_scan = calibration in ("noise", "noiseOT")
    truths: list[ChipTruth] = []
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with uproot.recreate(tmp) as out:
        for chip in chips:
            rng = np.random.default_rng(_seed(run, chip))
            order = rng.permutation(n)
            n_dead = max(1, n // 2000)
            n_noisy = max(1, n // 4000)
            dead, noisy = np.sort(order[:n_dead]), np.sort(order[n_dead : n_dead + n_noisy])
            truths.append(ChipTruth(chip, n, set(dead.tolist()), set(noisy.tolist())))
            base = chip_dir(chip, flavour)
            for quantity in maps:
                values = _quantity(quantity, shape, rng, dead, noisy, noise_scan=noise_scan, fraction=fraction)
                if flavour == "it":
                    rows, cols = shape
                    # TH2: x = column, y = row
                    out[f"{base}/{_name(chip, quantity)}"] = (
                        values.T.astype(np.float64),
                        np.arange(cols + 1, dtype=np.float64),
                        np.arange(rows + 1, dtype=np.float64),
                    )
                    dist_name = quantity.replace("2D", "1D") if quantity.endswith("2D") else quantity + "1D"
                else:
                    out[f"{base}/{_name(chip, quantity)}"] = (values.astype(np.float64), np.arange(n + 1.0))
                    dist_name = quantity + "Distribution"
                flat = values.ravel()
                live = flat[flat > 0]
                hi = float(live.max()) * 1.05 if live.size else 1.0
                out[f"{base}/{_name(chip, dist_name)}"] = np.histogram(live, bins=100, range=(0.0, hi))
    tmp.replace(path)
    return truths


def write_register_files(folder: Path, prefix: str, chips: list[ChipId]) -> None:
    """Plausible per-chip register dumps (text) as Ph2_ACF leaves them next to the results."""
    folder.mkdir(parents=True, exist_ok=True)
    for chip in chips:
        lines = [f"# {chip.kind} registers, board {chip.board} og {chip.optical_group} hybrid {chip.hybrid}"]
        lines += [f"VCAL_HIGH 0x{500 + chip.chip:04x}", "VCAL_MED 0x0064", f"DAC_GDAC_M_LIN 0x{380 + chip.hybrid:04x}"]
        (folder / f"{prefix}{chip.kind}_{chip.key}.txt").write_text("\n".join(lines) + "\n")
