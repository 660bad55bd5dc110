"""State and command enumerations of the CAEN service, shared by the FSMs, the status payloads and the docs."""

from __future__ import annotations

from enum import StrEnum


class ChannelState(StrEnum):
    """State of one power-supply channel, derived from its Status bitfield and its CA connection."""

    OFF = "OFF"
    ON = "ON"
    RAMP_UP = "RAMP_UP"
    RAMP_DOWN = "RAMP_DOWN"
    TRIPPED = "TRIPPED"
    ERROR = "ERROR"
    UNPLUGGED = "UNPLUGGED"
    DISCONNECTED = "DISCONNECTED"


class ModuleState(StrEnum):
    """State of one tracker module: an LV channel and an HV channel powered as a pair."""

    OFF = "OFF"
    LV_RAMP_UP = "LV_RAMP_UP"
    LV_RAMP_DOWN = "LV_RAMP_DOWN"
    LV_ON = "LV_ON"
    HV_RAMP_UP = "HV_RAMP_UP"
    HV_ON = "HV_ON"
    HV_RAMP_DOWN = "HV_RAMP_DOWN"
    TRIPPED = "TRIPPED"
    MIXED = "MIXED"
    DISCONNECTED = "DISCONNECTED"


class SystemState(StrEnum):
    """State of the whole crate as seen through the configured modules."""

    OFF = "OFF"
    LV_ON = "LV_ON"
    HV_ON = "HV_ON"
    RAMPING = "RAMPING"
    MIXED = "MIXED"
    TRIPPED = "TRIPPED"
    DISCONNECTED = "DISCONNECTED"


class Command(StrEnum):
    """Operator commands that act on modules (the triggers of the module FSM)."""

    LV_ON = "lv_on"
    LV_OFF = "lv_off"
    HV_ON = "hv_on"
    HV_OFF = "hv_off"


class Kind(StrEnum):
    """Board kind of a channel."""

    LV = "lv"
    HV = "hv"
