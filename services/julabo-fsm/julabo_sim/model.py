"""A Julabo circulator as a pure model: first-order bath temperature, heating/cooling power, alarms.

No I/O and no clock of its own: :meth:`ChillerModel.advance` is given the elapsed (simulated) seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

LOW_LEVEL = -1
EXCESS_TEMPERATURE_WARNING = -3
LOW_TEMPERATURE_WARNING = -4
EXCESS_TEMPERATURE_PROTECTOR = -14

# What the device's STATUS command says for each code (HighTech/FP-HL series operating manual, remote
# control chapter): 00..03 operating state, negative codes alarms, warnings and refused commands.
STATUS_MESSAGES: dict[int, str] = {
    0: "MANUAL STOP",
    1: "MANUAL START",
    2: "REMOTE STOP",
    3: "REMOTE START",
    -1: "LOW LEVEL ALARM",
    -2: "REFRIGERATION ALARM",
    -3: "EXCESS TEMPERATURE WARNING",
    -4: "LOW TEMPERATURE WARNING",
    -5: "WORKING SENSOR ALARM",
    -6: "SENSOR DIFFERENCE ALARM",
    -7: "I2C-BUS ERROR",
    -8: "INVALID COMMAND",
    -9: "COMMAND NOT ALLOWED IN CURRENT OPERATING MODE",
    -10: "VALUE TOO SMALL",
    -11: "VALUE TOO LARGE",
    -12: "TEMPERATURE MEASUREMENT ALARM",
    -13: "WARNING : VALUE EXCEEDS TEMPERATURE LIMITS",
    -14: "EXCESS TEMPERATURE PROTECTOR ALARM",
}


@dataclass
class ChillerConfig:
    """Physical and power-on parameters of the simulated circulator."""

    ambient: float = 21.0
    tau_s: float = 60.0  # bath time constant towards the target when running
    ambient_tau_s: float = 1800.0  # drift towards ambient when stopped
    max_heat_rate: float = 1.0  # K/s the heater can add at 100 %
    max_cool_rate: float = 0.5  # K/s the cooler can remove at -100 %
    proportional_band: float = 5.0  # K of error for 100 % power
    external_coupling: float = 0.9  # external Pt100 = ambient + coupling * (bath - ambient) in steady state
    external_tau_s: float = 20.0
    power_on_setpoints: tuple[float, float, float] = (20.0, 20.0, 20.0)
    setpoint_range: tuple[float, float] = (-50.0, 200.0)  # device limits: -10 VALUE TOO SMALL / -11 TOO LARGE
    protector_limit: float = 80.0  # excess temperature protector (hardware, latched alarm)
    high_warning: float = 60.0
    low_warning: float = -45.0
    external_present: bool = True
    remote: bool = True


@dataclass
class ChillerModel:
    """State of the circulator. Alarms latch until :meth:`clear_alarm` (the front-panel reset)."""

    config: ChillerConfig = field(default_factory=ChillerConfig)
    bath_temp: float = float("nan")
    external_temp: float = float("nan")
    setpoints: list[float] = field(default_factory=list)
    active: int = 0  # 0..2
    external_control: bool = False
    running: bool = False
    pump_stage: int = 2
    remote: bool = True
    external_present: bool = True
    latched_alarm: int | None = None
    command_error: int | None = None  # reported once by the next STATUS
    heating_power: float = 0.0
    powered: bool = True
    high_warning: float = 60.0
    low_warning: float = -45.0

    def __post_init__(self) -> None:
        c = self.config
        if math.isnan(self.bath_temp):
            self.bath_temp = c.ambient
        if math.isnan(self.external_temp):
            self.external_temp = c.ambient
        if not self.setpoints:
            self.setpoints = list(c.power_on_setpoints)
        self.remote = c.remote
        self.external_present = c.external_present
        self.high_warning = c.high_warning
        self.low_warning = c.low_warning

    # ------------------------------------------------------------------ physics
    @property
    def setpoint(self) -> float:
        return self.setpoints[self.active]

    def bath_target(self) -> float:
        """Where the controller drives the bath: the setpoint, or what puts the external sensor on it."""
        c = self.config
        if self.external_control and self.external_present:
            return c.ambient + (self.setpoint - c.ambient) / c.external_coupling
        return self.setpoint

    def advance(self, dt: float) -> None:
        """Let ``dt`` seconds of simulated time pass."""
        if dt <= 0:
            return
        c = self.config
        if self.running and self.powered:
            error = self.bath_target() - self.bath_temp
            self.heating_power = max(-100.0, min(100.0, 100.0 * error / c.proportional_band))
            step = error * (1.0 - math.exp(-dt / c.tau_s))
            limit = (c.max_heat_rate if step > 0 else c.max_cool_rate) * dt
            self.bath_temp += max(-limit, min(limit, step))
        else:
            self.heating_power = 0.0
            self.bath_temp += (c.ambient - self.bath_temp) * (1.0 - math.exp(-dt / c.ambient_tau_s))
        ext_target = c.ambient + c.external_coupling * (self.bath_temp - c.ambient)
        self.external_temp += (ext_target - self.external_temp) * (1.0 - math.exp(-dt / c.external_tau_s))
        if self.bath_temp > c.protector_limit:
            self.raise_alarm(EXCESS_TEMPERATURE_PROTECTOR)

    # ------------------------------------------------------------------ status
    def status_code(self) -> int:
        """The code STATUS reports now (a pending command error is consumed by :meth:`take_status`)."""
        if self.latched_alarm is not None:
            return self.latched_alarm
        if self.running and self.bath_temp > self.high_warning:
            return EXCESS_TEMPERATURE_WARNING
        if self.running and self.bath_temp < self.low_warning:
            return LOW_TEMPERATURE_WARNING
        return (2 if self.remote else 0) + (1 if self.running else 0)

    def take_status(self) -> tuple[int, str]:
        """The STATUS answer: a pending command error first (once), else alarms, else the operating state."""
        if self.command_error is not None and self.latched_alarm is None:
            code, self.command_error = self.command_error, None
        else:
            code = self.status_code()
        return code, STATUS_MESSAGES.get(code, "UNKNOWN")

    # ------------------------------------------------------------------ actions (front panel / faults)
    def raise_alarm(self, code: int) -> None:
        """A latched device alarm: heater, cooler and pump stop until the alarm is cleared."""
        if self.latched_alarm is None:
            self.latched_alarm = code
        self.running = False

    def clear_alarm(self) -> bool:
        """Front-panel reset; refused (False) while the cause persists."""
        if self.latched_alarm == EXCESS_TEMPERATURE_PROTECTOR and self.bath_temp > self.config.protector_limit:
            return False
        self.latched_alarm = None
        return True

    def power_cycle(self) -> None:
        """Mains came back: the circulator is stopped and the remote-set values are lost."""
        self.running = False
        self.setpoints = list(self.config.power_on_setpoints)
        self.active = 0
        self.external_control = False
        self.pump_stage = 2
        self.command_error = None
        self.high_warning = self.config.high_warning
        self.low_warning = self.config.low_warning
