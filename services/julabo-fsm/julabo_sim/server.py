"""The simulator process: one chiller model served on a pty (serial) and a TCP port, plus a control port.

Everything runs on one selector loop (no threads), so the model needs no locking. Control commands are
text lines on the control TCP port, each answered by one line (``OK …``/``ERR …``; ``state`` answers JSON):

``unplug [seconds]`` / ``replug``  serial cable pulled / put back: the chiller neither hears nor answers
                             (with ``seconds``: put back by itself after that long, e.g. a 10-minute outage).
``drop``                     close the TCP clients (a serial bridge rebooting).
``power_fail [seconds]``     mains lost for ``seconds`` (default 3); the chiller comes back stopped with
                             its power-on setpoints, and the first command after power-up is lost.
``alarm low_level|overtemp|<code>``  latch a device alarm (-01, -14 or any negative code); it stops.
``clear``                    front-panel alarm reset.
``panel start|stop``         the start/stop key on the front panel (start refused while an alarm is latched).
``remote on|off``            remote (OUT_* accepted) or manual mode.
``external on|off``          external Pt100 plugged in or not (``---.--``).
``bath <°C>``                force the bath temperature.
``pacing <s>`` / ``xon <p>`` pacing rule and XON/XOFF noise probability.
``jitter <s>``               the device finishes reading a line up to ``s`` after it arrived (0: off).
``drop_replies <p>``         probability that a query is carried out but its reply is lost.
``lose <n> [PREFIX [k]]``    the next ``n`` lines (those starting with PREFIX, e.g. ``OUT_MODE_05``, after
                             letting ``k`` of them through) never reach the device; ``lose 0`` ends it.
``state``                    JSON dump of the model and the per-connection statistics.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import selectors
import socket
import time
import tty
from dataclasses import asdict, dataclass
from pathlib import Path

from .engine import LineEngine, LineFaults
from .model import EXCESS_TEMPERATURE_PROTECTOR, LOW_LEVEL, ChillerConfig, ChillerModel

log = logging.getLogger(__name__)

TICK_S = 0.05


@dataclass
class SimOptions:
    host: str = "127.0.0.1"
    tcp_port: int | None = 0  # None: no TCP port; 0: pick a free one
    control_port: int = 0
    pty_link: str | None = None
    pty: bool = True
    pacing_s: float = 0.25
    pacing_tolerance_s: float = 0.02
    jitter_s: float = 0.0
    drop_reply_probability: float = 0.0
    xon_probability: float = 0.05
    first_command_lost: bool = True
    time_scale: float = 1.0
    seed: int | None = None
    power_fail_s: float = 3.0


class _Conn:
    def __init__(self, kind: str, engine: LineEngine, sock: socket.socket | None = None, fd: int | None = None):
        self.kind = kind
        self.engine = engine
        self.sock = sock
        self.fd = fd
        self.buffer = bytearray()


class ChillerSimulator:
    """Serve a :class:`ChillerModel` until :meth:`stop` (or a signal) ends :meth:`run`."""

    def __init__(self, options: SimOptions, config: ChillerConfig | None = None) -> None:
        self.options = options
        self.model = ChillerModel(config or ChillerConfig())
        self.rng = random.Random(options.seed)
        self.sel = selectors.DefaultSelector()
        self.unplugged = False
        self.replug_at: float | None = None
        self.faults = LineFaults()
        self.power_back_at: float | None = None
        self.running = True
        self.conns: list[_Conn] = []
        self.pty_conn: _Conn | None = None
        self.pty_path: str | None = None
        self._slave_fd: int | None = None
        self.tcp_listener: socket.socket | None = None
        self.control_listener: socket.socket
        self._controls: dict[socket.socket, bytearray] = {}
        self._last_tick = time.monotonic()
        self._setup()

    # ------------------------------------------------------------------ setup
    def _engine(self) -> LineEngine:
        o = self.options
        return LineEngine(
            self.model,
            rng=random.Random(self.rng.random()),
            pacing_s=o.pacing_s,
            pacing_tolerance_s=o.pacing_tolerance_s,
            jitter_s=o.jitter_s,
            drop_reply_probability=o.drop_reply_probability,
            faults=self.faults,
            xon_probability=o.xon_probability,
            first_command_lost=o.first_command_lost,
        )

    def _listen(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.options.host, port))
        sock.listen(8)
        sock.setblocking(False)
        return sock

    def _setup(self) -> None:
        o = self.options
        if o.pty:
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            self._slave_fd = slave  # kept open so the master never sees EIO between client sessions
            self.pty_path = os.ttyname(slave)
            if o.pty_link:
                link = Path(o.pty_link)
                with contextlib.suppress(FileNotFoundError):
                    link.unlink()
                link.symlink_to(self.pty_path)
            self.pty_conn = _Conn("pty", self._engine(), fd=master)
            self.conns.append(self.pty_conn)
            self.sel.register(master, selectors.EVENT_READ, ("pty", self.pty_conn))
        if o.tcp_port is not None:
            self.tcp_listener = self._listen(o.tcp_port)
            self.sel.register(self.tcp_listener, selectors.EVENT_READ, ("tcp-listen", None))
        self.control_listener = self._listen(o.control_port)
        self.sel.register(self.control_listener, selectors.EVENT_READ, ("control-listen", None))

    def endpoints(self) -> dict[str, object]:
        """Where clients find the simulator (printed as the READY line)."""
        return {
            "pty": self.options.pty_link or self.pty_path,
            "pty_device": self.pty_path,
            "tcp_port": self.tcp_listener.getsockname()[1] if self.tcp_listener else None,
            "control_port": self.control_listener.getsockname()[1],
            "host": self.options.host,
        }

    # ------------------------------------------------------------------ loop
    @property
    def powered(self) -> bool:
        return self.power_back_at is None

    def run(self) -> None:
        """Serve until :meth:`stop`."""
        try:
            while self.running:
                for key, _ in self.sel.select(timeout=TICK_S):
                    kind, conn = key.data
                    try:
                        self._ready(kind, conn, key.fileobj)
                    except OSError as exc:
                        log.debug("%s: %s", kind, exc)
                        if conn is not None and conn.kind == "tcp":
                            self._close(conn)
                self._tick()
        finally:
            self.close()

    def stop(self) -> None:
        self.running = False

    def _tick(self) -> None:
        now = time.monotonic()
        self.model.advance((now - self._last_tick) * self.options.time_scale)
        self._last_tick = now
        if self.replug_at is not None and now >= self.replug_at:
            self.control("replug")
        if self.power_back_at is not None and now >= self.power_back_at:
            self.power_back_at = None
            self.model.powered = True
            self.model.power_cycle()
            for conn in self.conns:
                conn.engine.reset()
            log.info("power is back: chiller stopped, setpoints at power-on values")

    def _ready(self, kind: str, conn: _Conn | None, fileobj: object) -> None:
        if kind == "pty":
            assert conn is not None and conn.fd is not None
            self._serve(conn, os.read(conn.fd, 4096))
        elif kind == "tcp":
            assert conn is not None and conn.sock is not None
            data = conn.sock.recv(4096)
            if not data:
                self._close(conn)
                return
            self._serve(conn, data)
        elif kind == "tcp-listen":
            assert self.tcp_listener is not None
            sock, _ = self.tcp_listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = _Conn("tcp", self._engine(), sock=sock)
            self.conns.append(client)
            self.sel.register(sock, selectors.EVENT_READ, ("tcp", client))
        elif kind == "control-listen":
            sock, _ = self.control_listener.accept()
            self._controls[sock] = bytearray()
            self.sel.register(sock, selectors.EVENT_READ, ("control", None))
        elif kind == "control":
            assert isinstance(fileobj, socket.socket)
            self._control_input(fileobj)

    def _serve(self, conn: _Conn, data: bytes) -> None:
        if self.unplugged or not self.powered:
            return  # nobody at the other end of the cable
        now = time.monotonic()
        self.model.advance((now - self._last_tick) * self.options.time_scale)
        self._last_tick = now
        reply = conn.engine.feed(data, now)
        if not reply:
            return
        if conn.kind == "pty":
            assert conn.fd is not None
            with contextlib.suppress(BlockingIOError):
                os.write(conn.fd, reply)
        else:
            assert conn.sock is not None
            conn.sock.sendall(reply)

    def _close(self, conn: _Conn) -> None:
        if conn.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(conn.sock)
            conn.sock.close()
        if conn in self.conns:
            self.conns.remove(conn)

    def close(self) -> None:
        for conn in list(self.conns):
            if conn.kind == "tcp":
                self._close(conn)
        for sock in list(self._controls):
            sock.close()
        if self.pty_conn is not None and self.pty_conn.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.pty_conn.fd)
        if self._slave_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._slave_fd)
        if self.options.pty_link:
            with contextlib.suppress(OSError):
                link = Path(self.options.pty_link)
                if link.is_symlink():
                    link.unlink()
        for sock in (self.tcp_listener, self.control_listener):
            if sock is not None:
                sock.close()
        self.sel.close()

    # ------------------------------------------------------------------ control port
    def _control_input(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(4096)
        except OSError:
            data = b""
        if not data:
            self.sel.unregister(sock)
            self._controls.pop(sock, None)
            sock.close()
            return
        buffer = self._controls[sock]
        buffer += data
        while b"\n" in buffer:
            line, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            answer = self.control(line.decode("utf-8", "replace").strip())
            with contextlib.suppress(OSError):
                sock.sendall(answer.encode() + b"\n")

    def control(self, line: str) -> str:
        """Carry out one fault-injection command; the one-line answer."""
        words = line.split()
        if not words:
            return "ERR empty command"
        cmd, args = words[0].lower(), words[1:]
        m = self.model
        try:
            if cmd == "unplug":
                self.unplugged = True
                self.replug_at = time.monotonic() + float(args[0]) if args else None
            elif cmd == "replug":
                self.unplugged = False
                self.replug_at = None
                for conn in self.conns:
                    conn.engine.reset()
            elif cmd == "drop":
                for conn in [c for c in self.conns if c.kind == "tcp"]:
                    self._close(conn)
            elif cmd == "power_fail":
                seconds = float(args[0]) if args else self.options.power_fail_s
                self.power_back_at = time.monotonic() + seconds
                m.powered = False
                m.running = False
            elif cmd == "alarm":
                name = args[0] if args else ""
                code = {"low_level": LOW_LEVEL, "overtemp": EXCESS_TEMPERATURE_PROTECTOR}.get(name)
                code = code if code is not None else int(name)
                if code >= 0:
                    return "ERR alarm codes are negative"
                m.raise_alarm(code)
            elif cmd == "clear":
                if not m.clear_alarm():
                    return "ERR the cause of the alarm persists"
            elif cmd == "panel":
                if not args or args[0].lower() not in ("start", "stop"):
                    return "ERR panel start|stop"
                if args[0].lower() == "start" and m.latched_alarm is not None:
                    return "ERR an alarm is latched: clear it first"
                m.running = args[0].lower() == "start"
            elif cmd in ("remote", "external"):
                flag = _on_off(args)
                if cmd == "remote":
                    m.remote = flag
                else:
                    m.external_present = flag
            elif cmd == "bath":
                m.bath_temp = float(args[0])
            elif cmd == "pacing":
                for conn in self.conns:
                    conn.engine.pacing_s = float(args[0])
                self.options.pacing_s = float(args[0])
            elif cmd in ("jitter", "drop_replies"):
                value = float(args[0])
                if value < 0 or (cmd == "drop_replies" and value > 1):
                    return f"ERR {cmd}: out of range"
                attr = "jitter_s" if cmd == "jitter" else "drop_reply_probability"
                for conn in self.conns:
                    setattr(conn.engine, attr, value)
                setattr(self.options, attr, value)
            elif cmd == "lose":
                self.faults.lose(int(args[0]), args[1] if len(args) > 1 else "", int(args[2]) if len(args) > 2 else 0)
            elif cmd == "xon":
                for conn in self.conns:
                    conn.engine.xon_probability = float(args[0])
                self.options.xon_probability = float(args[0])
            elif cmd == "state":
                return json.dumps(self.state())
            else:
                return f"ERR unknown control command '{cmd}'"
        except (IndexError, ValueError) as exc:
            return f"ERR {cmd}: {exc or 'missing argument'}"
        log.info("control: %s", line)
        return f"OK {line}"

    def state(self) -> dict[str, object]:
        m = self.model
        return {
            "bath_temp": round(m.bath_temp, 3),
            "external_temp": round(m.external_temp, 3) if m.external_present else None,
            "heating_power": round(m.heating_power, 2),
            "setpoints": m.setpoints,
            "active": m.active,
            "external_control": m.external_control,
            "running": m.running,
            "pump_stage": m.pump_stage,
            "remote": m.remote,
            "alarm": m.latched_alarm,
            "powered": self.powered,
            "unplugged": self.unplugged,
            "pacing_s": self.options.pacing_s,
            "jitter_s": self.options.jitter_s,
            "drop_reply_probability": self.options.drop_reply_probability,
            "connections": [{"kind": c.kind, **asdict(c.engine.stats)} for c in self.conns],
        }


def _on_off(args: list[str]) -> bool:
    if not args or args[0].lower() not in ("on", "off"):
        raise ValueError("expected on|off")
    return args[0].lower() == "on"
