"""``ph2acf-sim``: a MiddlewareController-like TCP server running simulated calibrations.

It behaves like the real server where a client's mistakes matter (facts from the public Ph2_ACF sources):

``--release 2019-2022`` (string protocol; ``--framing len4`` for 2019-2020 builds, ``len8`` for 2021-2022)::

    Initialize                                         -> InitializeDone
    Configure,Calibration:<c>,ConfigurationFile:<xml>  -> ConfigureDone
    Start:{RunNumber:<n>}                              -> StartDone
    Status?                                            -> Running | Done
    Stop                                               -> StopDone   (writes the results *now*; a scan goes on)
    Halt                                               -> HaltDone   (Stop + destroy; fatal while a scan runs)
    Pause / Resume                                     -> PauseDone / ResumeDone (no effect)
    Error:<anything>                                   -> empty reply (how the server hears of a closed client)

Anything else - an unknown command or calibration, ``Status?``/``Start``/``Stop``/``Halt`` before ``Configure``,
a broken packet or a packet-number gap - makes the real server call ``abort()``: the process dies and every
connection with it. The simulator does the same (in-process tests get the server closed instead). There is no
error reply, no ``Progress?`` and no abort command. Results go to ``Results/Run_<N>/Results.root`` below
``--workdir`` for both flavours; the run number is the client's, and the server writes no run-number file.

``--release current`` (protobuf protocol): every plain-string packet is answered with a binary protobuf
``ReplyMessage`` of type ERROR ("Can't recognize message"); the simulator speaks no protobuf otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from .releases import LEGACY, MIDDLEWARE_TO_CLI, RELEASES, Personality, personality
from .simrun import SimError, SimSettings, SimulatedRun, crash
from .wire import Unpacker, WireError, pack

log = logging.getLogger("ph2acf_sim.server")


class ServerAbort(Exception):
    """The real server would call abort() here: the process dies."""


def _value(name: str, text: str) -> str:
    """What Ph2_ACF's getVariableValue returns: from after ``<name>:`` up to the next comma."""
    begin = text.find(name)
    if begin < 0:
        return ""
    begin += len(name) + 1
    end = text.find(",", begin)
    return text[begin:] if end < 0 else text[begin:end]


def _stoi(text: str) -> int:
    match = re.match(r"\s*([+-]?\d+)", text)
    if not match:
        raise ServerAbort(f"std::stoi: no conversion of {text!r}")
    return int(match.group(1))


def protobuf_error_reply(message: str = "Can't recognize message") -> bytes:
    """A protobuf-encoded ReplyMessage {reply_type {type: ERROR}, message} (field numbers UNCONFIRMED)."""
    text = message.encode()
    inner = bytes([0x08, 0x02])  # field 1 (type), varint 2
    return bytes([0x0A, len(inner)]) + inner + bytes([0x12, len(text)]) + text


class MiddlewareSim:
    """The command interpreter; one per server, shared by its connections (one run at a time)."""

    def __init__(self, flavour: str, workdir: Path, persona: Personality, settings: SimSettings | None = None) -> None:
        self.flavour = flavour
        self.workdir = workdir
        self.persona = persona
        self.settings = settings
        self.controller: tuple[str, str] | None = None  # (calibration, configuration file) after Configure
        self.run: SimulatedRun | None = None
        self.thread: threading.Thread | None = None
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.on_crash: Callable[[], None] = crash

    def handle(self, payload: bytes) -> bytes:
        """The reply to one packet payload; raises ServerAbort where the real server would die."""
        if self.persona.protobuf:
            return protobuf_error_reply()
        text = payload.decode("utf-8", errors="replace")
        with self.lock:
            return self._handle_text(text).encode()

    def _running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def scanning(self) -> bool:
        """A scan is in progress (for the server's command log)."""
        return self._running()

    def _need_controller(self, command: str) -> tuple[str, str]:
        if self.controller is None:
            raise ServerAbort(f"{command} before Configure: null SystemController dereferenced")
        return self.controller

    def _handle_text(self, text: str) -> str:
        if text == "Initialize":
            return "InitializeDone"
        if text.startswith("Start"):
            self._start(_stoi(_value("RunNumber", text).lstrip("{")))
            return "StartDone"
        if text.startswith("Status?"):
            self._need_controller("Status?")
            return "Running" if self._running() else "Done"
        if text.startswith("Stop"):
            self._need_controller("Stop")
            if self.run is not None:
                run = self.run
                run.write(max(run.progress, 1.0) / 100.0)  # saves what there is; the scan itself goes on
            return "StopDone"
        if text.startswith("Halt"):
            self._need_controller("Halt")
            if self._running():
                raise ServerAbort("Halt during a scan: objects destroyed while still in use")
            self.controller = None
            self.run = None
            return "HaltDone"
        if text == "Pause":
            return "PauseDone"
        if text == "Resume":
            return "ResumeDone"
        if text.startswith("Configure"):
            self._configure(_value("Calibration", text), _value("ConfigurationFile", text))
            return "ConfigureDone"
        if text.startswith("Error:"):
            return ""
        raise ServerAbort(f"Can't recognize message: {text[:80]!r}")

    def _configure(self, calibration: str, config_file: str) -> None:
        known = self.persona.middleware_calibrations()
        if calibration not in known:
            raise ServerAbort(f"Calibration type {calibration} not found")
        if self._running():
            raise ServerAbort("Configure during a scan: the running calibration was replaced")
        try:
            SimulatedRun(self.flavour, calibration, config_file, 0, self.workdir, self._settings(),
                         result_path=self.workdir / "unused", progress_line=str)  # fmt: skip
        except SimError as exc:
            raise ServerAbort(f"Configure failed: {exc}") from None
        self.controller = (calibration, config_file)

    def _start(self, run: int) -> None:
        calibration, config_file = self._need_controller("Start")
        if self._running():
            raise ServerAbort("Start during a scan")
        maps = MIDDLEWARE_TO_CLI.get(calibration, calibration)
        result = self.workdir / "Results" / f"Run_{run}" / "Results.root"
        try:
            sim = SimulatedRun(self.flavour, maps, config_file, run, self.workdir, self._settings(),
                               result_path=result, progress_line=self.persona.progress_line, log=_stdout)  # fmt: skip
        except SimError as exc:
            raise ServerAbort(f"Start failed: {exc}") from None
        _stdout(f"Run {run} started")
        self.run = sim
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=sim.execute, args=(self.stop_event, self.on_crash), daemon=True)
        self.thread.start()

    def shutdown(self) -> None:
        """Stop a scan in progress (server exit)."""
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=60)

    def _settings(self) -> SimSettings:
        return self.settings or SimSettings.from_env()


def _stdout(line: str) -> None:
    print(line, flush=True)


class Server:
    """Accepts connections and answers packets; ``die`` is what happens where the real server aborts."""

    def __init__(self, host: str, port: int, sim: MiddlewareSim, die: Callable[[str], None] | None = None) -> None:
        self.host, self.port, self.sim = host, port, sim
        self.stop = threading.Event()
        self.died: str | None = None
        self._die = die
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        sim.on_crash = lambda: self.abort("simulated crash during the scan")

    def abort(self, why: str) -> None:
        """Die like abort(): every connection drops, nothing listens any more."""
        log.error("abort(): %s", why)
        print(f"ph2acf-sim: abort(): {why}", file=sys.stderr, flush=True)
        if self._die is not None:
            self._die(why)  # the real process ends here
        self.died = why
        self.stop.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                self._listener.close()
        for conn in list(self._conns):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()

    def serve_connection(self, conn: socket.socket) -> None:
        unpacker = Unpacker(self.sim.persona.framing)
        number = 0
        self._conns.append(conn)
        with conn:
            while not self.stop.is_set():
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    with contextlib.suppress(ServerAbort):
                        self.sim.handle(b"Error: Connection closed")
                    return
                try:
                    payloads = unpacker.feed(data)
                    for payload in payloads:
                        scanning = self.sim.scanning()
                        reply = self.sim.handle(payload)
                        log.info("%r -> %r%s", payload[:80], reply[:80], " (during a scan)" if scanning else "")
                        conn.sendall(pack(reply, self.sim.persona.framing, number))
                        number += 1
                except (ServerAbort, WireError) as exc:
                    self.abort(str(exc))
                    return
                except OSError:
                    return

    def serve_forever(self) -> None:
        with socket.create_server((self.host, self.port)) as listener:
            self._listener = listener
            listener.settimeout(0.2)
            persona = self.sim.persona
            print(f"ph2acf-sim listening on {self.host}:{self.port} (release {persona.release}, "
                  f"framing {persona.framing})", flush=True)  # fmt: skip
            while not self.stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return  # closed by abort()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                threading.Thread(target=self.serve_connection, args=(conn,), daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    """Console script ``ph2acf-sim --port N [--release 2019-2022|current] [--framing len4|len8] ...``."""
    parser = argparse.ArgumentParser(prog="ph2acf-sim", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--flavour", choices=("it", "ot"), default="it")
    parser.add_argument("--workdir", default=".", help="Ph2_ACF working directory (configuration files, Results/)")
    parser.add_argument("--release", choices=RELEASES, default=LEGACY, help="which Ph2_ACF release to be")
    parser.add_argument("--framing", choices=("len4", "len8"), help="2019-2022 only: len4 (2019-20) or len8 (2021-22)")
    parser.add_argument("--write-example-xml", metavar="NAME", help="write an example hardware description first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        persona = personality(args.release, args.framing)
    except ValueError as exc:
        parser.error(str(exc))
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if args.write_example_xml:
        from .detector import example_xml

        target = workdir / args.write_example_xml
        if not target.exists():
            target.write_text(example_xml(args.flavour))
    sim = MiddlewareSim(args.flavour, workdir, persona)
    server = Server(args.host, args.port, sim, die=lambda why: (sys.stdout.flush(), os.abort()))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.stop.set())
    try:
        server.serve_forever()
    except OSError as exc:
        print(f"ph2acf-sim: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        sys.exit(1)
    sim.shutdown()


if __name__ == "__main__":
    main()
