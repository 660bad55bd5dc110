"""Drive a Ph2_ACF RunController / MiddlewareController over TCP (length-prefixed string packets).

Flow: ``Initialize`` -> ``Configure,Calibration:<c>,ConfigurationFile:<xml>`` -> ``Start:{RunNumber:<n>}``,
then ``Status?`` (and the simulator's ``Progress?`` extension, if enabled) every ``poll_s`` until ``Done``;
``Stop`` and ``Halt`` close the run (``Stop`` early on abort). A dropped connection or an ``Error`` reply ends
the run as failed. Result files are looked for in the configured Ph2_ACF working directory.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .calibrations import result_path
from .framing import Decoder, FramingError, encode
from .logparse import Progress
from .runner import EventSink, RunEnd, RunnerError
from .settings import BridgeSettings

log = logging.getLogger(__name__)


class ProtocolError(Exception):
    """The peer answered something unexpected or went away."""


class RunControlClient:
    """One TCP connection speaking the packet protocol, request/response."""

    def __init__(self, host: str, port: int, header: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.header = header
        self.counter = 0
        self.decoder = Decoder(header)  # type: ignore[arg-type]
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as exc:
            raise ProtocolError(f"cannot connect to Ph2_ACF at {host}:{port}: {exc.strerror or exc}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request(self, message: str) -> str:
        """Send ``message`` and return the reply text."""
        self.counter += 1
        try:
            self.sock.sendall(encode(message, self.header, self.counter))  # type: ignore[arg-type]
            deadline = time.monotonic() + self.timeout_s
            while True:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = self.sock.recv(65536)
                if not data:
                    raise ProtocolError("Ph2_ACF closed the connection")
                packets = self.decoder.feed(data)
                if packets:
                    return packets[-1].text.strip()
        except (OSError, FramingError) as exc:
            raise ProtocolError(f"connection to Ph2_ACF lost during {message.split(',')[0]!r}: {exc}") from None

    def expect(self, message: str, reply: str) -> None:
        answer = self.request(message)
        if answer != reply:
            raise ProtocolError(f"{message.split(',')[0]} answered {answer!r} (expected {reply!r})")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class TcpRunner:
    """One run through a RunController."""

    mode = "tcp"

    def __init__(self, settings: BridgeSettings, next_run: Callable[[], int]) -> None:
        self.settings = settings
        self.next_run = next_run
        self.client: RunControlClient | None = None
        self.calibration = ""
        self.run: int | None = None
        self._abort = threading.Event()

    def launch(self, calibration: str, config_file: Path) -> int | None:
        tcp = self.settings.tcp
        self.calibration = calibration
        try:
            self.client = RunControlClient(tcp.host, tcp.port, tcp.header, tcp.timeout_s)
            self.client.expect("Initialize", "InitializeDone")
            self.client.expect(f"Configure,Calibration:{calibration},ConfigurationFile:{config_file}", "ConfigureDone")
            self.run = self.next_run()
            self.client.expect(f"Start:{{RunNumber:{self.run}}}", "StartDone")
        except ProtocolError as exc:
            if self.client is not None:
                with contextlib.suppress(ProtocolError):
                    self.client.request("Halt")
                self.client.close()
            raise RunnerError(str(exc)) from None
        return self.run

    def follow(self, on_event: EventSink) -> RunEnd:
        assert self.client is not None
        end = RunEnd(run=self.run)
        tail: list[str] = []
        try:
            while True:
                if self._abort.wait(self.settings.tcp.poll_s):
                    tail.append(f"Stop -> {self.client.request('Stop')}")
                    end.aborted = True
                    break
                status = self.client.request("Status?")
                if status == "Done":
                    tail.append("Status? -> Done")
                    with contextlib.suppress(ProtocolError):
                        tail.append(f"Stop -> {self.client.request('Stop')}")
                    break
                if status != "Running":
                    raise ProtocolError(f"Status? answered {status!r}")
                if self.settings.tcp.progress_query:
                    answer = self.client.request("Progress?")
                    if answer.startswith("Progress:"):
                        with contextlib.suppress(ValueError):
                            on_event(Progress(float(answer.split(":", 1)[1])))
            with contextlib.suppress(ProtocolError):
                tail.append(f"Halt -> {self.client.request('Halt')}")
            end.exit_code = 0
        except ProtocolError as exc:
            end.error = str(exc)
            end.aborted = self._abort.is_set()
            tail.append(str(exc))
        finally:
            self.client.close()
        end.log_tail = tail
        if self.run is not None:
            with contextlib.suppress(KeyError):
                expected = self.settings.workdir / result_path(self.settings.flavour, self.calibration, self.run)  # type: ignore[arg-type]
                if expected.exists():
                    end.result_file = expected
        return end

    def abort(self) -> None:
        self._abort.set()
