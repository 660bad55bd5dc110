"""Calibrations Ph2_ACF offers, per flavour, and where their results go (facts from DESIGN.md)."""

from __future__ import annotations

from typing import Literal

Flavour = Literal["it", "ot"]

#: Inner tracker (CMSITminiDAQ -c <key>) -> the name used in ``Results/Run%06d_<Name>.root``.
IT_CALIBRATIONS: dict[str, str] = {
    "pixelalive": "PixelAlive",
    "noise": "NoiseScan",
    "scurve": "SCurve",
    "gain": "Gain",
    "threqu": "ThrEqualization",
    "gainopt": "GainOptimization",
    "thrmin": "ThrMinimization",
    "thradj": "ThrAdjustment",
    "latency": "Latency",
    "injdelay": "InjectionDelay",
    "clkdelay": "ClockDelay",
    "physics": "Physics",
}

#: Outer tracker (runCalibration -c <key>) -> a descriptive name (OT results all go to Results.root).
OT_CALIBRATIONS: dict[str, str] = {
    "pedenoise": "PedeNoise",
    "calibration": "Calibration",
    "calibrationandpedenoise": "CalibrationAndPedeNoise",
    "noiseOT": "NoiseOT",
    "takedata": "TakeData",
}


def calibrations(flavour: Flavour) -> dict[str, str]:
    """The calibration table of ``flavour`` ("it" or "ot")."""
    if flavour == "it":
        return IT_CALIBRATIONS
    if flavour == "ot":
        return OT_CALIBRATIONS
    raise ValueError(f"unknown flavour {flavour!r} (it|ot)")


def result_name(flavour: Flavour, calibration: str) -> str:
    """The result name of ``calibration``; KeyError if the flavour does not know it."""
    return calibrations(flavour)[calibration]


def result_path(flavour: Flavour, calibration: str, run: int) -> str:
    """The result file of ``run`` relative to the Ph2_ACF working directory."""
    if flavour == "it":
        return f"Results/Run{run:06d}_{result_name(flavour, calibration)}.root"
    return f"Results/Run_{run}/Results.root"
