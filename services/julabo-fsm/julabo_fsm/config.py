"""The julabo-fsm configuration file as typed models (strict types, unknown keys refused; pure, no I/O).

:class:`JulaboFile` is the layout of the YAML (see example.yml); :meth:`julabo_fsm.app.JulaboConfig.from_config`
validates with it and builds the objects the service runs on.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from trackerdcs.configmodel import ConfigModel, MqttSection

from .driver import DriverConfig
from .protocol import MODELS, model_map

_D = DriverConfig  # the driver's own defaults are the file's defaults


def _known_model(name: str) -> str:
    model_map(name)  # ValueError naming the known models
    return name


class SetpointLimits(ConfigModel):
    """``julabo.limits``: set_setpoint refuses values outside [min, max] (degC)."""

    setpoint_min: float = -40.0
    setpoint_max: float = 40.0


class SerialOptions(ConfigModel):
    """``julabo.serial``: line settings for a real serial port (defaults: 4800 baud 7E1 with RTS/CTS)."""

    baudrate: int | None = Field(None, gt=0)
    bytesize: Literal[7, 8] | None = None
    parity: Literal["N", "E", "O"] | None = None
    stopbits: Literal[1, 2] | None = None
    rtscts: bool | None = None


class JulaboSection(ConfigModel):
    """``julabo:``: the chiller, its link and the driver's timing."""

    connection: str = Field(min_length=1, description="a serial device path or socket://host:port")
    model: Annotated[str, AfterValidator(_known_model)] = Field("hightech", examples=sorted(MODELS))
    limits: SetpointLimits = SetpointLimits()
    reply_timeout_s: float = Field(0.5, gt=0)
    serial: SerialOptions = SerialOptions()
    root: str = "julabo"
    heartbeat_s: float = Field(30.0, gt=0)
    pacing_s: float = Field(_D.pacing_s, gt=0)
    poll_interval_s: float = Field(_D.poll_interval_s, ge=0, description="0: start the next cycle at once")
    max_missed: int = Field(_D.max_missed, ge=1)
    garbled_for_error: int = Field(_D.garbled_for_error, ge=1)
    reconnect_min_s: float = Field(_D.reconnect_min_s, gt=0)
    reconnect_max_s: float = Field(_D.reconnect_max_s, gt=0)
    probe_attempts: int = Field(_D.probe_attempts, ge=1)
    restore_after_power_failure: bool = _D.restore_after_power_failure
    command_timeout_s: float = Field(_D.command_timeout_s, gt=0)
    stale_after_s: float = Field(_D.stale_after_s, gt=0, description="a reading older than this is published as null")
    unsafe_attempts: int = Field(_D.unsafe_attempts, ge=1)


class JulaboFile(ConfigModel):
    """The julabo-fsm configuration file."""

    mqtt: MqttSection = MqttSection()
    julabo: JulaboSection
