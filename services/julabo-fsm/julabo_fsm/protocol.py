"""The Julabo line protocol, free of I/O: command encoding, reply parsing, STATUS codes, per-model maps.

Facts (docs/services/julabo.md): a command is ``COMMAND[ value]\\r``; ``IN_*``, ``STATUS`` and
``VERSION`` answer one line ending in ``\\r\\n``; ``OUT_*`` never answer (a refused value shows up in the next
``STATUS``). Replies may carry XON/XOFF bytes. An absent external Pt100 reads ``---.--``. STATUS codes are
``00 MANUAL STOP`` … ``03 REMOTE START``; negative codes are alarms or errors, keyed on the sign.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

XON = 0x11
XOFF = 0x13
TERMINATOR = b"\r"
REPLY_END = b"\r\n"
ABSENT = "---.--"


class ProtocolError(ValueError):
    """A reply could not be understood (garbled, truncated or of the wrong kind)."""


class Reading(enum.StrEnum):
    """Values the service reads. Their command strings depend on the model (:class:`ModelMap`)."""

    BATH_TEMP = "bath_temp"
    HEATING_POWER = "heating_power"
    EXTERNAL_TEMP = "external_temp"
    SETPOINT_1 = "setpoint_1"
    SETPOINT_2 = "setpoint_2"
    SETPOINT_3 = "setpoint_3"
    ACTIVE_SETPOINT = "active_setpoint"
    CONTROL_SENSOR = "control_sensor"
    RUNNING = "running"
    PUMP_STAGE = "pump_stage"


class Setting(enum.StrEnum):
    """Values the service writes (``OUT_*`` commands)."""

    SETPOINT_1 = "setpoint_1"
    SETPOINT_2 = "setpoint_2"
    SETPOINT_3 = "setpoint_3"
    ACTIVE_SETPOINT = "active_setpoint"
    CONTROL_SENSOR = "control_sensor"
    RUNNING = "running"
    PUMP_STAGE = "pump_stage"
    HIGH_WARNING = "high_warning"
    LOW_WARNING = "low_warning"


SETPOINT_READINGS = (Reading.SETPOINT_1, Reading.SETPOINT_2, Reading.SETPOINT_3)
SETPOINT_SETTINGS = (Setting.SETPOINT_1, Setting.SETPOINT_2, Setting.SETPOINT_3)
INT_READINGS = frozenset({Reading.ACTIVE_SETPOINT, Reading.CONTROL_SENSOR, Reading.RUNNING, Reading.PUMP_STAGE})


@dataclass(frozen=True)
class ModelMap:
    """Command strings of one chiller family. A reading or setting mapped to None is not available."""

    name: str
    reads: dict[Reading, str | None]
    writes: dict[Setting, str | None]

    def read_command(self, reading: Reading) -> str:
        command = self.reads.get(reading)
        if command is None:
            raise KeyError(f"model {self.name} cannot read {reading.value}")
        return command

    def write_command(self, setting: Setting) -> str:
        command = self.writes.get(setting)
        if command is None:
            raise KeyError(f"model {self.name} cannot set {setting.value}")
        return command

    def can_read(self, reading: Reading) -> bool:
        return self.reads.get(reading) is not None

    def can_write(self, setting: Setting) -> bool:
        return self.writes.get(setting) is not None


_HIGHTECH_READS: dict[Reading, str | None] = {
    Reading.BATH_TEMP: "IN_PV_00",
    Reading.HEATING_POWER: "IN_PV_01",
    Reading.EXTERNAL_TEMP: "IN_PV_02",
    Reading.SETPOINT_1: "IN_SP_00",
    Reading.SETPOINT_2: "IN_SP_01",
    Reading.SETPOINT_3: "IN_SP_02",
    Reading.ACTIVE_SETPOINT: "IN_MODE_01",
    Reading.CONTROL_SENSOR: "IN_MODE_04",
    Reading.RUNNING: "IN_MODE_05",
    Reading.PUMP_STAGE: "IN_SP_07",
}
_HIGHTECH_WRITES: dict[Setting, str | None] = {
    Setting.SETPOINT_1: "OUT_SP_00",
    Setting.SETPOINT_2: "OUT_SP_01",
    Setting.SETPOINT_3: "OUT_SP_02",
    Setting.ACTIVE_SETPOINT: "OUT_MODE_01",
    Setting.CONTROL_SENSOR: "OUT_MODE_04",
    Setting.RUNNING: "OUT_MODE_05",
    Setting.PUMP_STAGE: "OUT_SP_07",
    Setting.HIGH_WARNING: "OUT_SP_03",
    Setting.LOW_WARNING: "OUT_SP_04",
}

MODELS: dict[str, ModelMap] = {
    # FP50-HL, FP-HE, HighTech FL/SL "HL/SL" series: the command set documented in docs/services/julabo.md.
    "hightech": ModelMap("hightech", _HIGHTECH_READS, _HIGHTECH_WRITES),
    # CORIO CD/CP (UNCONFIRMED): same temperatures and setpoints, no pump-stage command.
    "corio": ModelMap(
        "corio",
        {**_HIGHTECH_READS, Reading.PUMP_STAGE: None},
        {**_HIGHTECH_WRITES, Setting.PUMP_STAGE: None},
    ),
}
DEFAULT_MODEL = "hightech"


def model_map(name: str | None) -> ModelMap:
    """The command map of model ``name`` (case-insensitive); ValueError for an unknown model."""
    key = (name or DEFAULT_MODEL).strip().lower()
    if key not in MODELS:
        raise ValueError(f"unknown Julabo model '{name}'; known: {', '.join(sorted(MODELS))}")
    return MODELS[key]


# ---------------------------------------------------------------------------------------------- encoding
_COMMAND_RE = re.compile(r"^[A-Z]+(_[A-Z]+_\d{2})?$")


def format_value(value: float | int) -> str:
    """Render a value the way the chiller expects it: integers plain, temperatures with two decimals."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise ValueError(f"cannot send non-finite value {value!r}")
    return f"{value:.2f}"


def encode(command: str, value: float | int | None = None) -> bytes:
    """``encode("OUT_SP_00", 20.5) == b"OUT_SP_00 20.50\\r"``; ``encode("IN_PV_00") == b"IN_PV_00\\r"``."""
    if not _COMMAND_RE.match(command):
        raise ValueError(f"not a Julabo command: {command!r}")
    text = command if value is None else f"{command} {format_value(value)}"
    return text.encode("ascii") + TERMINATOR


def expects_reply(command: str) -> bool:
    """True for commands the chiller answers (everything but ``OUT_*``)."""
    return not command.startswith("OUT_")


# ---------------------------------------------------------------------------------------------- decoding
def strip_flow_control(data: bytes) -> bytes:
    """Remove XON/XOFF bytes the chiller (or a serial bridge) may insert into replies."""
    return data.replace(bytes([XON]), b"").replace(bytes([XOFF]), b"")


def reply_text(raw: bytes) -> str:
    """The text of one reply line: flow-control bytes and the line end removed, printable ASCII enforced."""
    data = strip_flow_control(raw)
    if not data.endswith(b"\n"):
        raise ProtocolError(f"truncated reply {raw!r}")
    data = data.rstrip(b"\r\n")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError(f"garbled reply {raw!r}") from None
    if not text.isprintable() or "\r" in text or "\n" in text:
        raise ProtocolError(f"garbled reply {raw!r}")
    return text.strip()


_FLOAT_RE = re.compile(r"^[+-]?\d{1,4}(\.\d{1,3})?$")
_INT_RE = re.compile(r"^[+-]?\d{1,3}$")


def parse_float(raw: bytes) -> float | None:
    """A temperature or power reply; None for ``---.--`` (sensor absent)."""
    text = reply_text(raw)
    if text == ABSENT:
        return None
    if not _FLOAT_RE.match(text):
        raise ProtocolError(f"expected a number, got {text!r}")
    return float(text)


def parse_int(raw: bytes) -> int:
    """An integer reply (mode selections, pump stage)."""
    text = reply_text(raw)
    if not _INT_RE.match(text):
        raise ProtocolError(f"expected an integer, got {text!r}")
    return int(text)


def parse_reading(reading: Reading, raw: bytes) -> float | int | None:
    """Decode the reply to ``reading``'s query."""
    if reading in INT_READINGS:
        value = parse_int(raw)
        if reading in (Reading.CONTROL_SENSOR, Reading.RUNNING) and value not in (0, 1):
            raise ProtocolError(f"{reading.value}: expected 0 or 1, got {value}")
        if reading is Reading.ACTIVE_SETPOINT and value not in (0, 1, 2):
            raise ProtocolError(f"active setpoint: expected 0..2, got {value}")
        return value
    return parse_float(raw)


def parse_version(raw: bytes) -> str:
    """The identity line, e.g. ``JULABO HIGHTECH FL HL/SL VERSION 4.0``."""
    text = reply_text(raw)
    if "VERSION" not in text.upper() and "JULABO" not in text.upper():
        raise ProtocolError(f"not a VERSION reply: {text!r}")
    return text


class StatusCategory(enum.StrEnum):
    """What a STATUS code means for the operator."""

    STOPPED = "stopped"
    RUNNING = "running"
    ALARM = "alarm"  # the device signals a fault (negative code); it usually stops itself
    COMMAND_ERROR = "command_error"  # the last command or value was refused; the device state is unchanged


# Negative codes that report a refused command or value rather than a device fault (-08 … -13 in the manuals).
COMMAND_ERROR_CODES = frozenset({-8, -9, -10, -11, -12, -13})

STATUS_TEXTS: dict[int, str] = {
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


@dataclass(frozen=True)
class StatusReport:
    """One decoded STATUS line."""

    code: int
    text: str
    category: StatusCategory

    @property
    def remote(self) -> bool | None:
        """True in remote mode, False in manual mode, None when the code does not say (negative codes)."""
        if self.code < 0:
            return None
        return self.code >= 2

    @property
    def running(self) -> bool | None:
        """True when started, False when stopped, None when the code does not say."""
        if self.code < 0:
            return None
        return self.code % 2 == 1


_STATUS_RE = re.compile(r"^([+-]?\d{1,3})\s*(.*)$")


def status_category(code: int) -> StatusCategory:
    """Key on the sign: 0..3 stop/start, negative codes are command errors or alarms."""
    if code < 0:
        return StatusCategory.COMMAND_ERROR if code in COMMAND_ERROR_CODES else StatusCategory.ALARM
    if code > 3:
        raise ProtocolError(f"unknown STATUS code {code}")
    return StatusCategory.RUNNING if code % 2 else StatusCategory.STOPPED


def parse_status(raw: bytes) -> StatusReport:
    """``b"03 REMOTE START\\r\\n"`` → ``StatusReport(3, "REMOTE START", RUNNING)``."""
    text = reply_text(raw)
    match = _STATUS_RE.match(text)
    if not match:
        raise ProtocolError(f"not a STATUS reply: {text!r}")
    code = int(match.group(1))
    message = match.group(2).strip()
    if not message:
        raise ProtocolError(f"STATUS without text: {text!r}")
    return StatusReport(code, message, status_category(code))


def format_status(code: int, text: str | None = None) -> str:
    """The STATUS line the chiller sends for ``code`` (without the line end), e.g. ``-01 LOW LEVEL ALARM``."""
    body = text if text is not None else STATUS_TEXTS.get(code, "UNKNOWN")
    return f"{code:03d} {body}" if code < 0 else f"{code:02d} {body}"
