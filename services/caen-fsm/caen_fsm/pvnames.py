"""PV naming and parameter catalogue of the CAEN SY4527/SY5527 EPICS server (pure data and functions).

Channel PVs are ``<SysName>:<slot %02d>:<chan %03d>:<Param>``; crate PVs ``<SysName>:<Prop>``.
One PV per parameter, read/write. HV currents are in uA, LV currents in A.
"""

from __future__ import annotations

from dataclasses import dataclass

from .states import Kind


@dataclass(frozen=True)
class Param:
    """One channel parameter: its PV suffix, whether operators may write it, and, for an enum, the manual's
    words for its values. Only the words are assumed, never their index: the index is looked up in the label
    list the IOC gives (:mod:`caen_fsm.enums`)."""

    name: str
    writable: bool
    enum: tuple[str, ...] | None = None
    integer: bool = False
    unit: str = ""
    #: physical bounds, whatever the configured limits say (a negative voltage, current, time or rate, or a
    #: Trip beyond 1000 s = "never trip", is never meaningful for a write)
    minimum: float | None = None
    maximum: float | None = None


COMMON = (
    Param("Pw", True, enum=("Off", "On")),
    Param("Status", False, integer=True),
    Param("V0Set", True, unit="V", minimum=0.0),
    Param("I0Set", True, minimum=0.0),
    Param("VMon", False, unit="V"),
    Param("IMon", False),
    Param("Trip", True, unit="s", minimum=0.0, maximum=1000.0),
    Param("TripInt", True, integer=True, minimum=0),
    Param("TripExt", True, integer=True, minimum=0),
)
LV_ONLY = (
    Param("UNVThr", True, unit="V", minimum=0.0),
    Param("OVVThr", True, unit="V", minimum=0.0),
    Param("RUpTime", True, minimum=0.0),
    Param("RDwTime", True, minimum=0.0),
    Param("Temp", False, unit="degC"),
)
HV_ONLY = (
    Param("RUp", True, unit="V/s", minimum=0.0),
    Param("RDWn", True, unit="V/s", minimum=0.0),
    Param("PDwn", True, enum=("Kill", "Ramp")),
    Param("ImRange", True, enum=("High", "Low")),
)

PARAMS: dict[Kind, dict[str, Param]] = {
    Kind.LV: {p.name: p for p in COMMON + LV_ONLY},
    Kind.HV: {p.name: p for p in COMMON + HV_ONLY},
}

#: Parameters that the ``set`` command may write (``Pw`` only through lv_on/lv_off/hv_on/hv_off).
SETTABLE: dict[Kind, tuple[str, ...]] = {
    kind: tuple(n for n, p in params.items() if p.writable and n != "Pw") for kind, params in PARAMS.items()
}

#: Setting names of the 2020 prototype config (``global:``/per-channel keys) mapped to PV parameters.
ALIASES: dict[str, str] = {
    "setV": "V0Set",
    "maxI": "I0Set",
    "tripTime": "Trip",
    "tripInt": "TripInt",
    "tripExt": "TripExt",
    "unVThr": "UNVThr",
    "ovVThr": "OVVThr",
    "rampUpTime": "RUpTime",
    "rampDwnTime": "RDwTime",
    "rampUpSpeed": "RUp",
    "rampDwnSpeed": "RDWn",
    "tripMode": "PDwn",
    "imRange": "ImRange",
}

#: Crate-level property written to clear latched alarms (enum No/Yes: the index of "Yes" in the IOC's list).
CLEAR_ALARM = "ClearAlarm"


def canonical_param(name: str, kind: Kind) -> str | None:
    """The PV parameter called ``name`` (native or prototype alias, case-insensitive) for ``kind``, or None."""
    params = PARAMS[kind]
    if name in params:
        return name
    if name in ALIASES and ALIASES[name] in params:
        return ALIASES[name]
    lowered = name.lower()
    for candidate in params:
        if candidate.lower() == lowered:
            return candidate
    for alias, target in ALIASES.items():
        if alias.lower() == lowered and target in params:
            return target
    return None


def channel_prefix(system: str, slot: int, channel: int) -> str:
    """``<SysName>:<slot %02d>:<chan %03d>``."""
    return f"{system}:{slot:02d}:{channel:03d}"


def channel_pv(system: str, slot: int, channel: int, param: str) -> str:
    """Full PV name of one channel parameter, e.g. ``cleanroom:00:003:V0Set``."""
    return f"{channel_prefix(system, slot, channel)}:{param}"


def crate_pv(system: str, prop: str) -> str:
    """Full PV name of a crate property, e.g. ``cleanroom:ClearAlarm``."""
    return f"{system}:{prop}"
