"""The byte pipe to the chiller: a serial device or ``socket://host:port``, with the pacing rule enforced.

A thin adapter around ``pyserial.serial_for_url``; everything it returns is raw bytes for
:mod:`julabo_fsm.protocol` to judge. Real serial ports get 4800 baud 7E1 with RTS/CTS; a Linux pty ignores
those settings and refuses modem-line calls (ENOTTY), which is tolerated.
"""

from __future__ import annotations

import contextlib
import os
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import serial

PTY_MAJORS = range(136, 144)  # Unix98 pty slaves (/dev/pts/N)


def is_pty(url: str) -> bool:
    """True when ``url`` names a pseudo-terminal (e.g. the simulator's), whose framing settings are moot."""
    if "://" in url:
        return False
    try:
        return os.major(os.stat(url).st_rdev) in PTY_MAJORS
    except OSError:
        return False


class LinkError(OSError):
    """The link cannot be opened or broke (device node gone, TCP connection refused or closed)."""


@dataclass
class Pacer:
    """Keeps at least ``interval_s`` between the starts of two commands. Pure: the clock is injected."""

    interval_s: float = 0.25
    clock: Callable[[], float] = time.monotonic
    _last: float | None = None

    def wait_needed(self) -> float:
        """Seconds to wait before the next command may go out."""
        if self._last is None:
            return 0.0
        return max(0.0, self._last + self.interval_s - self.clock())

    def mark(self) -> None:
        """A command went out now."""
        self._last = self.clock()

    def reset(self) -> None:
        self._last = None


@dataclass
class SerialLink:
    """One connection to the chiller. Not thread-safe: a single I/O thread owns it."""

    url: str
    pacing_s: float = 0.27
    reply_timeout_s: float = 0.5
    baudrate: int = 4800
    bytesize: int = 7
    parity: str = "E"
    stopbits: int = 1
    rtscts: bool = True
    sleep: Callable[[float], None] = time.sleep
    pacer: Pacer = field(init=False)
    _port: serial.SerialBase | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.pacer = Pacer(self.pacing_s)

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def open(self) -> None:
        """Open the port (raise :class:`LinkError` if impossible) and discard stale input."""
        self.close()
        # A Linux pty ignores baud rate and parity, and refuses a second 7E1 tcsetattr with EINVAL:
        # on a pty the framing is left alone.
        framing = (
            {}
            if is_pty(self.url)
            else {
                "baudrate": self.baudrate,
                "bytesize": self.bytesize,
                "parity": self.parity,
                "stopbits": self.stopbits,
                "rtscts": self.rtscts,
            }
        )
        try:
            port = serial.serial_for_url(
                self.url, do_not_open=True, timeout=self.reply_timeout_s, write_timeout=2.0, **framing
            )
            port.open()
        except (serial.SerialException, OSError, ValueError, termios.error) as exc:
            raise LinkError(f"cannot open {self.url}: {exc}") from None
        self._port = port
        self.pacer.reset()
        self._drain()

    def close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()

    def _drain(self) -> None:
        assert self._port is not None
        try:
            self._port.reset_input_buffer()
        except (serial.SerialException, OSError, termios.error) as exc:
            raise LinkError(f"{self.url}: {exc}") from None

    def transact(self, data: bytes, expect_reply: bool) -> bytes | None:
        """Send one command (after the pacing wait) and return its reply line, b"" on silence, or None
        when no reply is expected. Partial lines are returned as they are, for the parser to refuse."""
        if self._port is None:
            raise LinkError("link is closed")
        wait = self.pacer.wait_needed()
        if wait > 0:
            self.sleep(wait)
        self._drain()  # a late or garbled reply must not be taken for the answer to this command
        try:
            self._port.write(data)
            self._port.flush()
            self.pacer.mark()
            if not expect_reply:
                return None
            return bytes(self._port.read_until(b"\n", size=256))
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise LinkError(f"{self.url}: {exc}") from None
