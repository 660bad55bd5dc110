"""State and command enumerations of the CAEN service, shared by the FSMs, the status payloads and the docs."""

from __future__ import annotations

from enum import StrEnum

from trackerdcs.completion import Completion


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


# What "done" means for each module command, judged on ``<root>/status/module/<m>`` of every module the reply
# names: published in the command table (``caen/commands``) for ``dcs caen lv_on --wait`` and the operator UI.
# A trip or a lost connection ends the wait as failed; any other state is still on its way (a module that
# reads OFF just after lv_on has not started its ramp yet).
_LV_IS_ON = (ModuleState.LV_ON, ModuleState.HV_RAMP_UP, ModuleState.HV_ON, ModuleState.HV_RAMP_DOWN)
_HV_IS_OFF = (ModuleState.OFF, ModuleState.LV_RAMP_UP, ModuleState.LV_RAMP_DOWN, ModuleState.LV_ON)
_FAILED = (ModuleState.TRIPPED, ModuleState.DISCONNECTED)


def _module_completion(done: tuple[ModuleState, ...], timeout_s: float, description: str) -> Completion:
    return Completion(
        done=tuple(s.value for s in done),
        failed=tuple(s.value for s in _FAILED),
        topic="status/module/{modules}",
        field="state",
        timeout_s=timeout_s,
        show=("lv_vmon", "hv_vmon"),
        description=description,
    )


COMPLETIONS = {
    Command.LV_ON: _module_completion(_LV_IS_ON, 120.0, "every module named reads LV on"),
    Command.LV_OFF: _module_completion((ModuleState.OFF,), 600.0, "every module named reads OFF (HV ramps first)"),
    Command.HV_ON: _module_completion((ModuleState.HV_ON,), 600.0, "every module named reads HV_ON"),
    Command.HV_OFF: _module_completion(_HV_IS_OFF, 600.0, "every module named reads HV off"),
}
