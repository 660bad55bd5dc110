"""What the simulator pretends to be: facts about Ph2_ACF releases, written down from the public sources.

Two personalities matter for a stand (``--release`` of ``ph2acf-sim``, ``PH2ACF_SIM_RELEASE`` for the
executables):

* ``2019-2022``: the string-protocol MiddlewareController, progress lines ``>>>> Progress :  42.5% <<<<``.
  Its wire framing changed in 2021: ``--framing len4`` (4-byte length, 2019-2020 builds) or ``len8``
  (length + packet number, 2021-2022 builds, the default of this personality).
* ``current``: the protobuf MiddlewareController (8-byte framing) that accepts no plain strings, progress lines
  ``>>> Progress: 42.5% <<<`` with colour and cursor-up codes.

This module is the simulator's own table; it shares nothing with the bridge on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

LEGACY = "2019-2022"
CURRENT = "current"
RELEASES = (LEGACY, CURRENT)

#: CMSITminiDAQ ``-c`` keys -> the result name used in ``Results/Run%06d_<Name>.root``.
IT_CLI_CALIBRATIONS: dict[str, str] = {
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

#: runCalibration ``-c`` keys (descriptive names only: outer-tracker results all go to Results.root).
OT_CLI_CALIBRATIONS: dict[str, str] = {
    "pedenoise": "PedeNoise",
    "calibration": "Calibration",
    "calibrationandpedenoise": "CalibrationAndPedeNoise",
    "noiseOT": "NoiseOT",
    "takedata": "TakeData",
}

#: ``Configure,Calibration:<name>`` names a string-protocol MiddlewareController of 2021-2022 knows. Anything
#: else makes it call abort(). Note ``clockdelay`` (not ``clkdelay`` as on the command line).
MIDDLEWARE_CALIBRATIONS_2021: dict[str, str] = {
    "calibration": "ot",
    "pedenoise": "ot",
    "calibrationandpedenoise": "ot",
    "calibrationexample": "ot",
    "cbcPulseShape": "ot",
    "OTLatency": "ot",
    "pixelalive": "it",
    "noise": "it",
    "scurve": "it",
    "gain": "it",
    "gainopt": "it",
    "threqu": "it",
    "thrmin": "it",
    "thradj": "it",
    "latency": "it",
    "injdelay": "it",
    "clockdelay": "it",
    "physics": "it",
    "psphysics": "ot",
    "2sphysics": "ot",
}

#: 2019-2020 servers had no threshold-adjustment tool (and no PS/2S physics).
MIDDLEWARE_CALIBRATIONS_2019 = {
    k: v for k, v in MIDDLEWARE_CALIBRATIONS_2021.items() if k not in ("thradj", "psphysics", "2sphysics")
}

#: which per-channel result a middleware calibration writes, in CLI terms (for the histogram generator)
MIDDLEWARE_TO_CLI = {"clockdelay": "clkdelay"}


@dataclass(frozen=True)
class Personality:
    """How one release looks from outside."""

    release: str
    framing: str  # "len4" | "len8"
    protobuf: bool

    def progress_line(self, percent: float) -> str:
        """The progress line this release prints on stdout."""
        if self.release == LEGACY:
            return f">>>> Progress : {percent:5.1f}% <<<<"
        return f"\x1b[1A\x1b[1m\x1b[32m>>> Progress: {percent:.1f}% <<<\x1b[0m"

    def middleware_calibrations(self) -> dict[str, str]:
        """``Configure`` calibration names the string server knows (empty for protobuf servers)."""
        if self.protobuf:
            return {}
        return MIDDLEWARE_CALIBRATIONS_2019 if self.framing == "len4" else MIDDLEWARE_CALIBRATIONS_2021


def personality(release: str, framing: str | None = None) -> Personality:
    """The personality of ``release``; ``framing`` only chooses between the two 2019-2022 wire formats."""
    if release == LEGACY:
        chosen = framing or "len8"
        if chosen not in ("len4", "len8"):
            raise ValueError(f"framing must be len4 or len8, not {chosen!r}")
        return Personality(LEGACY, chosen, protobuf=False)
    if release == CURRENT:
        if framing not in (None, "len8"):
            raise ValueError("the current release only speaks the 8-byte framing")
        return Personality(CURRENT, "len8", protobuf=True)
    raise ValueError(f"unknown release {release!r}; use one of {', '.join(RELEASES)}")
