"""Drive a string-protocol Ph2_ACF MiddlewareController (2019-2022 releases) over TCP.

What the real server allows, and therefore all the bridge ever sends (public Ph2_ACF sources):

* The framing follows the configured release (``len4`` 2019-2020, ``len8`` 2021-2022); it cannot be probed on
  the wire, because a packet in the wrong framing is already fatal for the server.
* ``Initialize`` first. It is harmless on every release: a string server answers ``InitializeDone``; a protobuf
  server (2023 on) answers with a binary ReplyMessage, which the bridge recognises - it then says so, closes the
  connection and sends nothing else.
* ``Configure,Calibration:<wire name>,ConfigurationFile:<xml>`` with a name the release knows, ``Start:{RunNumber:n}``,
  then ``Status?`` (answered ``Running`` or ``Done`` only) every ``poll_s``; after ``Done``: ``Stop`` (saves the
  results) and ``Halt``. No ``Progress?`` (there is none), no ``Halt`` or ``Status?`` before ``Configure`` (the
  server dereferences a missing object), nothing unknown (the server calls ``abort()``).
* Abort: the protocol has no way to end a scan early without harm (``Stop`` mid-scan saves the results while the
  scan goes on; ``Halt`` destroys objects still in use). The bridge therefore lets the scan finish, then sends
  ``Stop`` + ``Halt`` (results and run number intact, outcome ``aborted``). If the scan has not ended within
  ``tcp.abort_wait_s`` the bridge disconnects (the server only logs a closed connection), records the run as
  failed and says that the scan is still running on the Ph2_ACF server, to be stopped there by hand.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .calibrations import result_path, tcp_names
from .framing import Decoder, FramingError, encode
from .runner import EventSink, RunEnd, RunnerError
from .settings import BridgeSettings

log = logging.getLogger(__name__)


class ProtocolError(Exception):
    """The peer answered something unexpected or went away."""


class ProtobufServer(ProtocolError):
    """The peer answered with a binary (protobuf) message: a protobuf-era MiddlewareController."""


def reply_text(payload: bytes) -> str:
    """The reply as text; raises ProtobufServer if it is not the plain text a string-protocol server sends."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtobufServer("binary reply") from None
    if any(ord(c) < 32 and c not in "\t\r\n" for c in text):
        raise ProtobufServer("binary reply")
    return text.strip()


class RunControlClient:
    """One TCP connection speaking the packet protocol, request/response, never waiting longer than the timeout."""

    def __init__(self, host: str, port: int, framing: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.framing = framing
        self.counter = 0
        self.decoder = Decoder(framing)  # type: ignore[arg-type]
        self.where = f"{host}:{port}"
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as exc:
            raise ProtocolError(f"cannot connect to Ph2_ACF at {self.where}: {exc.strerror or exc}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request(self, message: str) -> str:
        """Send ``message`` and return the reply text (ProtobufServer if the reply is binary)."""
        name = message.split(",")[0].split(":")[0]
        try:
            self.sock.sendall(encode(message, self.framing, self.counter))  # type: ignore[arg-type]
            self.counter += 1
            deadline = time.monotonic() + self.timeout_s
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ProtocolError(f"no reply to {name!r} from Ph2_ACF at {self.where} within {self.timeout_s} s")
                self.sock.settimeout(remaining)
                data = self.sock.recv(65536)
                if not data:
                    raise ProtocolError(f"Ph2_ACF at {self.where} closed the connection after {name!r}")
                packets = self.decoder.feed(data)
                if packets:
                    return reply_text(packets[0].payload)
        except TimeoutError:
            raise ProtocolError(f"no reply to {name!r} from Ph2_ACF at {self.where} in {self.timeout_s} s") from None
        except (OSError, FramingError) as exc:
            raise ProtocolError(f"connection to Ph2_ACF at {self.where} lost during {name!r}: {exc}") from None

    def expect(self, message: str, reply: str) -> None:
        answer = self.request(message)
        if answer != reply:
            raise ProtocolError(f"{message.split(',')[0]} answered {answer!r} (expected {reply!r})")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class TcpRunner:
    """One run through a MiddlewareController."""

    mode = "tcp"

    def __init__(self, settings: BridgeSettings, next_run: Callable[[], int]) -> None:
        self.settings = settings
        self.next_run = next_run
        self.client: RunControlClient | None = None
        self.calibration = ""
        self.run: int | None = None
        self._abort = threading.Event()
        self._detach = threading.Event()

    def launch(self, calibration: str, config_file: Path) -> int | None:
        tcp = self.settings.tcp
        self.calibration = calibration
        wire = tcp_names(tcp.release, self.settings.flavour).get(calibration)  # type: ignore[arg-type]
        if wire is None:  # settings validation keeps this from happening; never send an unknown name
            raise RunnerError(f"calibration {calibration!r} is not known to a {tcp.release} Ph2_ACF server")
        try:
            self.client = RunControlClient(tcp.host, tcp.port, tcp.framing, tcp.timeout_s)
            try:
                answer = self.client.request("Initialize")
            except ProtobufServer:
                raise RunnerError(
                    f"the Ph2_ACF server at {self.client.where} answered 'Initialize' with a binary (protobuf) "
                    "message: it is a protobuf-era MiddlewareController (2023 or later), which the bridge does not "
                    "drive over TCP. Nothing else was sent. Use ph2acf.mode: subprocess for this installation."
                ) from None
            if answer != "InitializeDone":
                raise RunnerError(
                    f"the Ph2_ACF server at {self.client.where} answered 'Initialize' with {answer!r}, which no "
                    f"string-protocol MiddlewareController does (a protobuf-era server, or another program on that "
                    "port?). Nothing else was sent."
                )
            self.client.expect(f"Configure,Calibration:{wire},ConfigurationFile:{config_file}", "ConfigureDone")
            self.run = self.next_run()
            self.client.expect(f"Start:{{RunNumber:{self.run}}}", "StartDone")
        except ProtocolError as exc:
            if self.client is not None:
                self.client.close()
            raise RunnerError(str(exc)) from None
        except RunnerError:
            if self.client is not None:
                self.client.close()
            raise
        return self.run

    def follow(self, on_event: EventSink) -> RunEnd:
        assert self.client is not None
        client = self.client
        tcp = self.settings.tcp
        end = RunEnd(run=self.run)
        tail: list[str] = []
        abort_since: float | None = None
        try:
            while True:
                self._abort.wait(tcp.poll_s)
                if self._abort.is_set() and abort_since is None:
                    abort_since = time.monotonic()
                    tail.append("abort requested: letting the scan finish (no safe early stop over TCP)")
                    log.warning("run %s: abort requested; waiting up to %.0f s for the scan to end", self.run,
                                tcp.abort_wait_s)  # fmt: skip
                status = client.request("Status?")
                if status == "Done":
                    tail.append("Status? -> Done")
                    tail.append(f"Stop -> {client.request('Stop')}")
                    tail.append(f"Halt -> {client.request('Halt')}")
                    end.exit_code = 0
                    break
                if status != "Running":
                    raise ProtocolError(f"Status? answered {status!r}")
                waited_out = abort_since is not None and time.monotonic() - abort_since > tcp.abort_wait_s
                if waited_out or self._detach.is_set():
                    why = (
                        "the bridge shut down"
                        if self._detach.is_set()
                        else (f"it did not end within tcp.abort_wait_s={tcp.abort_wait_s:g} s")
                    )
                    end.error = (
                        f"abort: the scan of run {self.run} was not waited for ({why}); "
                        "the bridge disconnected and the scan is STILL RUNNING on the Ph2_ACF server "
                        "(stop it there, e.g. Ctrl-C in its terminal, before starting another run)"
                    )
                    tail.append(end.error)
                    end.left_running = True
                    break
        except ProtocolError as exc:
            end.error = str(exc)
            tail.append(str(exc))
        finally:
            client.close()
        end.aborted = self._abort.is_set()
        end.log_tail = tail
        if self.run is not None:
            expected = self.settings.workdir / result_path(self.settings.flavour, self.calibration, self.run, "tcp")  # type: ignore[arg-type]
            if expected.exists():
                end.result_file = expected
        return end

    def abort(self) -> None:
        self._abort.set()

    def detach(self) -> None:
        """Stop waiting for the scan at once (bridge shutdown): it is left running on the server and recorded so."""
        self._detach.set()
        self._abort.set()
