"""The chiller's serial line protocol as a pure engine: bytes in (with their arrival time), bytes out.

One engine serves one connection (a pty or a TCP client) to the shared :class:`ChillerModel`. It reproduces
the behaviour a client must cope with: OUT_* commands never answer and only work in remote mode, refused
values show up in the next STATUS, replies may carry XON/XOFF bytes, and the first command after the line is
opened (or after power-up) is lost.

Pacing as the device does it: it times its 250 ms from the moment it has *finished reading* the previous
line, which is up to ``jitter_s`` after that line arrived (its own firmware loop; uniform in [0, jitter_s]).
A line that arrives earlier than that is not read properly: its reply is garbled or missing. Switchable faults
for tests: ``drop_reply_probability`` (a query is carried out but the reply never leaves the device) and
:class:`LineFaults` (the next n lines, optionally only those starting with a prefix, are lost on the wire).

Written from the device facts only (manual: 4800 7E1, ``COMMAND[ value]\r`` in, ``reply\r\n`` out, XON/XOFF
flow control, ``---.--`` for an absent Pt100); nothing here comes from the service's code.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from .model import ChillerModel

XON = 0x11  # DC1, sent by the device's UART for software flow control
XOFF = 0x13  # DC3
CR = 0x0D  # a command ends with carriage return
LF = 0x0A
ABSENT = "---.--"  # what IN_PV_02 reads when no external Pt100 is plugged in

VERSION_TEXT = "JULABO HIGHTECH FL HL/SL VERSION 4.0"
MAX_LINE = 64

_LINE_RE = re.compile(r"^(IN|OUT)_(PV|SP|MODE)_(\d{2})(?: +(\S+))?$")


@dataclass
class EngineStats:
    """What happened on this connection (shown by the simulator's ``state`` control command)."""

    commands: int = 0
    pacing_violations: int = 0
    dropped: int = 0
    garbled: int = 0
    lost: int = 0


@dataclass
class LineFaults:
    """Lines lost on the wire, shared by every connection of one simulator (fault injection)."""

    pending: list[list] = field(default_factory=list)  # [lines to lose, prefix, matching lines to let through]

    def lose(self, count: int, prefix: str = "", skip: int = 0) -> None:
        """After letting ``skip`` matching lines through, the next ``count`` lines starting with ``prefix``
        (any line if empty) never reach the device. ``count`` 0 ends every such fault."""
        if count > 0:
            self.pending.append([count, prefix, skip])
        else:
            self.pending.clear()

    def take(self, line: bytes) -> bool:
        """True when ``line`` is to be lost (and counts it)."""
        for item in self.pending:
            if not line.startswith(item[1].encode("ascii", "replace")):
                continue
            if item[2] > 0:
                item[2] -= 1
                return False
            item[0] -= 1
            if item[0] <= 0:
                self.pending.remove(item)
            return True
        return False


@dataclass
class LineEngine:
    """Protocol state of one connection. ``feed`` returns whatever the chiller sends back."""

    model: ChillerModel
    rng: random.Random = field(default_factory=random.Random)
    pacing_s: float = 0.25
    pacing_tolerance_s: float = 0.02  # scheduling jitter of this process, not a device margin
    jitter_s: float = 0.0  # the device finishes reading a line up to this long after it arrived
    drop_reply_probability: float = 0.0
    xon_probability: float = 0.0
    first_command_lost: bool = True
    version: str = VERSION_TEXT
    faults: LineFaults = field(default_factory=LineFaults)
    stats: EngineStats = field(default_factory=EngineStats)
    _buffer: bytearray = field(default_factory=bytearray)
    _read_done: float | None = None  # when the device finished reading the previous line
    _fresh: bool = True

    def reset(self) -> None:
        """The line was (re)opened or the device powered up: partial input is lost, the quirk re-arms."""
        self._buffer.clear()
        self._read_done = None
        self._fresh = True

    def feed(self, data: bytes, now: float) -> bytes:
        """Consume bytes received at monotonic time ``now``; return the reply bytes to send."""
        out = bytearray()
        for byte in data:
            if byte in (XON, XOFF, LF):
                continue
            if byte != CR:
                if len(self._buffer) < MAX_LINE:
                    self._buffer.append(byte)
                continue
            line = bytes(self._buffer)
            self._buffer.clear()
            if self.faults.take(line):
                self.stats.lost += 1
                continue  # never reached the device: no effect, no reply, no pacing
            out += self._line(line, now)
        return bytes(out)

    # ------------------------------------------------------------------ one command
    def _line(self, raw: bytes, now: float) -> bytes:
        too_fast = self._read_done is not None and now - self._read_done < self.pacing_s - self.pacing_tolerance_s
        self._read_done = now + (self.rng.uniform(0.0, self.jitter_s) if self.jitter_s > 0 else 0.0)
        self.stats.commands += 1
        if self._fresh and self.first_command_lost:
            self._fresh = False
            self.stats.dropped += 1
            return b""
        self._fresh = False
        garble = False
        if too_fast:
            self.stats.pacing_violations += 1
            if self.rng.random() < 0.5:
                self.stats.dropped += 1
                return b""
            garble = True
        try:
            text = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            self.model.command_error = -8
            return b""
        reply = self.execute(text)
        if reply is None:
            return b""
        if self.drop_reply_probability and self.rng.random() < self.drop_reply_probability:
            self.stats.dropped += 1
            return b""  # carried out, but the reply is lost
        data = reply.encode("ascii") + b"\r\n"
        if garble:
            self.stats.garbled += 1
            data = self._garble(data)
        elif self.xon_probability and self.rng.random() < self.xon_probability:
            data = self._flow_noise(data)
        return data

    def execute(self, text: str) -> str | None:
        """Carry out one command line (without terminator) on the model; the reply text or None."""
        m = self.model
        if text == "VERSION":
            return self.version
        if text == "STATUS":
            code, message = m.take_status()
            return f"{code:03d} {message}" if code < 0 else f"{code:02d} {message}"
        match = _LINE_RE.match(text)
        if not match:
            m.command_error = -8
            return None
        direction, group, number, value = match.group(1), match.group(2), int(match.group(3)), match.group(4)
        if direction == "IN":
            if value is not None:
                m.command_error = -8
                return None
            return self._read(group, number)
        if value is None:
            m.command_error = -8
            return None
        if not m.remote:
            m.command_error = -9
            return None
        self._write(group, number, value)
        return None

    def _read(self, group: str, number: int) -> str | None:
        m = self.model
        if group == "PV":
            if number == 0:
                return f"{m.bath_temp:6.2f}"
            if number == 1:
                return f"{m.heating_power:6.1f}"
            if number == 2:
                return f"{m.external_temp:6.2f}" if m.external_present else ABSENT
        elif group == "SP":
            if number in (0, 1, 2):
                return f"{m.setpoints[number]:6.2f}"
            if number == 3:
                return f"{m.high_warning:6.2f}"
            if number == 4:
                return f"{m.low_warning:6.2f}"
            if number == 7:
                return str(m.pump_stage)
        elif group == "MODE":
            if number == 1:
                return str(m.active)
            if number == 4:
                return "1" if m.external_control else "0"
            if number == 5:
                return "1" if m.running else "0"
        m.command_error = -8
        return None

    def _write(self, group: str, number: int, text: str) -> None:
        m = self.model
        try:
            value = float(text)
        except ValueError:
            m.command_error = -8
            return
        lo, hi = m.config.setpoint_range
        if group == "SP" and number in (0, 1, 2, 3, 4):
            if value < lo:
                m.command_error = -10
            elif value > hi:
                m.command_error = -11
            elif number <= 2:
                m.setpoints[number] = round(value, 2)
            elif number == 3:
                m.high_warning = value
            else:
                m.low_warning = value
            return
        if group == "SP" and number == 7:
            if value != int(value):
                m.command_error = -8
            elif value < 1:
                m.command_error = -10
            elif value > 4:
                m.command_error = -11
            else:
                m.pump_stage = int(value)
            return
        if group == "MODE" and number in (1, 4, 5) and value == int(value):
            choice = int(value)
            top = 2 if number == 1 else 1
            if choice < 0:
                m.command_error = -10
            elif choice > top:
                m.command_error = -11
            elif number == 1:
                m.active = choice
            elif number == 4:
                m.external_control = bool(choice)
            elif choice == 1 and m.latched_alarm is not None:
                m.command_error = -9
            else:
                m.running = bool(choice)
            return
        m.command_error = -8

    # ------------------------------------------------------------------ line noise
    def _garble(self, data: bytes) -> bytes:
        """A reply mangled by a too-fast client: some characters become line noise."""
        body = bytearray(data[:-2])
        for _ in range(max(1, len(body) // 4)):
            if body:
                body[self.rng.randrange(len(body))] = self.rng.choice((0x80, 0x9F, 0xBF, 0xFE, 0xFF))
        return bytes(body) + b"\r\n"

    def _flow_noise(self, data: bytes) -> bytes:
        """XON/XOFF bytes sprinkled into a reply, as the real chiller's UART does."""
        where = self.rng.randrange(len(data))
        return bytes([XON]) + data[:where] + bytes([XOFF, XON]) + data[where:]
