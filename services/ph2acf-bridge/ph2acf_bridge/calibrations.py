"""Calibrations Ph2_ACF offers, per flavour and way of driving it, and where their results go.

Facts from the public Ph2_ACF sources: the command-line programs and the TCP MiddlewareController do not know the
same names (``clkdelay`` on the command line is ``clockdelay`` over TCP; the outer-tracker ``noiseOT`` and
``takedata`` exist on the command line only), and a string-protocol server calls ``abort()`` on a name it does
not know, so the bridge only ever sends names from :data:`TCP_NAMES` for the configured release.
"""

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


#: Operator key -> the ``Configure,Calibration:<name>`` a string-protocol server of each release knows.
TCP_NAMES: dict[str, dict[str, dict[str, str]]] = {
    "2021-2022": {
        "it": {k: ("clockdelay" if k == "clkdelay" else k) for k in IT_CALIBRATIONS},
        "ot": {k: k for k in ("pedenoise", "calibration", "calibrationandpedenoise")},
    },
}
#: 2019-2020 servers had no threshold-adjustment tool.
TCP_NAMES["2019-2020"] = {
    "it": {k: v for k, v in TCP_NAMES["2021-2022"]["it"].items() if k != "thradj"},
    "ot": dict(TCP_NAMES["2021-2022"]["ot"]),
}


def tcp_names(release: str, flavour: Flavour) -> dict[str, str]:
    """Operator key -> wire name for the calibrations a ``release`` server accepts (KeyError: unknown release)."""
    return TCP_NAMES[release][flavour]


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


def result_path(flavour: Flavour, calibration: str, run: int, mode: str = "subprocess") -> str:
    """The result file of ``run`` relative to the Ph2_ACF working directory (through the middleware every
    flavour writes ``Results/Run_<N>/Results.root``)."""
    if flavour == "it" and mode == "subprocess":
        return f"Results/Run{run:06d}_{result_name(flavour, calibration)}.root"
    return f"Results/Run_{run}/Results.root"
