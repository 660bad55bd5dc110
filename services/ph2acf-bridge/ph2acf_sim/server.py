"""``ph2acf-sim``: a RunController-style TCP server running simulated calibrations.

Protocol (DESIGN.md): length-prefixed string packets, ``--header len4`` (4-byte big-endian total length) or
``len8`` (length + packet counter; replies echo the request's counter). Commands and replies::

    Initialize                                              -> InitializeDone
    Configure,Calibration:<c>,ConfigurationFile:<xml>       -> ConfigureDone   | Error:<why>
    Start:{RunNumber:<n>}                                   -> StartDone       | Error:<why>
    Status?                                                 -> Running | Done | Idle
    Progress?   (simulator extension, UNCONFIRMED upstream) -> Progress:<percent>
    Stop                                                    -> StopDone
    Halt                                                    -> HaltDone

Results are written below ``--workdir`` exactly as the executables write them. A simulated crash
(``PH2ACF_SIM_CRASH_AT``) kills the whole server, like a real Ph2_ACF crash.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import signal
import socket
import sys
import threading
from pathlib import Path

from ph2acf_bridge.calibrations import Flavour
from ph2acf_bridge.framing import Decoder, FramingError, Variant, encode

from .simrun import SimError, SimSettings, SimulatedRun, _crash

log = logging.getLogger("ph2acf_sim.server")

CONFIGURE = re.compile(r"^Configure,Calibration:([^,]+),ConfigurationFile:(.+)$")
START = re.compile(r"^Start:\{RunNumber:(\d+)\}$")


class RunControllerSim:
    """The command interpreter; one instance per server, shared by its connections (one run at a time)."""

    def __init__(self, flavour: Flavour, workdir: Path, settings: SimSettings | None = None) -> None:
        self.flavour = flavour
        self.workdir = workdir
        self.settings = settings
        self.initialized = False
        self.configured: tuple[str, str] | None = None
        self.run: SimulatedRun | None = None
        self.thread: threading.Thread | None = None
        self.stop_event = threading.Event()
        self.lock = threading.Lock()

    def handle(self, command: str) -> str:
        """The reply to one command string."""
        command = command.strip()
        with self.lock:
            if command == "Initialize":
                self.initialized = True
                return "InitializeDone"
            if m := CONFIGURE.match(command):
                return self._configure(m.group(1).strip(), m.group(2).strip())
            if m := START.match(command):
                return self._start(int(m.group(1)))
            if command == "Status?":
                if self.thread is not None and self.thread.is_alive():
                    return "Running"
                return "Done" if self.run is not None else "Idle"
            if command == "Progress?":
                return f"Progress:{self.run.progress if self.run else 0.0:.1f}"
            if command == "Stop":
                self._stop()
                return "StopDone"
            if command == "Halt":
                self._stop()
                self.initialized = False
                self.configured = None
                return "HaltDone"
        return f"Error:unknown command {command[:80]!r}"

    def _configure(self, calibration: str, config_file: str) -> str:
        if not self.initialized:
            return "Error:not initialized"
        if self.thread is not None and self.thread.is_alive():
            return "Error:a run is in progress"
        try:
            SimulatedRun(self.flavour, calibration, config_file, 0, self.workdir, self._settings(), log=log.info)
        except SimError as exc:
            return f"Error:{exc}"
        self.configured = (calibration, config_file)
        return "ConfigureDone"

    def _start(self, run: int) -> str:
        if self.configured is None:
            return "Error:not configured"
        if self.thread is not None and self.thread.is_alive():
            return "Error:a run is in progress"
        try:
            sim = SimulatedRun(self.flavour, *self.configured, run, self.workdir, self._settings(), log=_stdout)
        except SimError as exc:
            return f"Error:{exc}"
        (self.workdir / "RunNumber.txt").write_text(f"{run + 1}\n")
        self.run = sim
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=sim.execute, args=(self.stop_event, _crash), daemon=True)
        self.thread.start()
        return "StartDone"

    def _stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=60)

    def _settings(self) -> SimSettings:
        return self.settings or SimSettings.from_env()


def _stdout(line: str) -> None:
    print(line, flush=True)


def serve_connection(conn: socket.socket, sim: RunControllerSim, variant: Variant) -> None:
    """Answer packets on ``conn`` until the peer closes it or sends garbage."""
    decoder = Decoder(variant)
    with conn:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            try:
                packets = decoder.feed(data)
            except FramingError as exc:
                log.warning("dropping connection: %s", exc)
                return
            for packet in packets:
                reply = sim.handle(packet.text)
                log.info("%s -> %s", packet.text, reply)
                try:
                    conn.sendall(encode(reply, variant, packet.counter or 0))
                except OSError:
                    return


def serve(host: str, port: int, sim: RunControllerSim, variant: Variant, stop: threading.Event) -> None:
    """Accept connections on host:port until ``stop`` is set."""
    with socket.create_server((host, port), reuse_port=False) as server:
        server.settimeout(0.2)
        log.info("RunController simulator (%s) listening on %s:%d, header %s", sim.flavour, host, port, variant)
        print(f"ph2acf-sim listening on {host}:{port}", flush=True)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=serve_connection, args=(conn, sim, variant), daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    """Console script ``ph2acf-sim --port N [--host H] [--flavour it|ot] [--workdir DIR] [--header len4|len8]``."""
    parser = argparse.ArgumentParser(prog="ph2acf-sim", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--flavour", choices=("it", "ot"), default="it")
    parser.add_argument("--workdir", default=".", help="Ph2_ACF working directory (configuration files, Results/)")
    parser.add_argument("--header", choices=("len4", "len8"), default="len4")
    parser.add_argument("--write-example-xml", metavar="NAME", help="write an example hardware description first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if args.write_example_xml:
        from .detector import example_xml

        target = workdir / args.write_example_xml
        if not target.exists():
            target.write_text(example_xml(args.flavour))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sim = RunControllerSim(args.flavour, workdir)
    try:
        serve(args.host, args.port, sim, args.header, stop)
    except OSError as exc:
        print(f"ph2acf-sim: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        sys.exit(1)
    with contextlib.suppress(Exception):
        sim.handle("Halt")


if __name__ == "__main__":
    main()
