"""The MiddlewareController simulator behaves like the real server where a client's mistakes matter: it dies
(abort()) on anything it does not know, speaks the framing of its release, and writes results where the
middleware does. Bytes on the wire are written out literally, from the public Ph2_ACF sources."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ph2acf_sim.releases import personality
from ph2acf_sim.server import MiddlewareSim, Server
from ph2acf_sim.simrun import SimSettings

from trackerdcs_devstack.localbroker import free_port, wait_port

#: the two string-protocol wire formats of the 2019-2022 personality
STRING_RELEASES = [("2019-2022", "len4"), ("2019-2022", "len8")]


class Running:
    def __init__(self, server: Server, port: int, workdir: Path, framing: str) -> None:
        self.server, self.port, self.workdir, self.framing = server, port, workdir, framing

    def alive(self) -> bool:
        return not self.server.died


def start_server(workdir: Path, release: str, framing: str | None, duration_s: float = 0.6) -> Running:
    port = free_port()
    sim = MiddlewareSim("it", workdir, personality(release, framing), SimSettings(duration_s, None, (20, 16), 4))
    server = Server("127.0.0.1", port, sim)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    wait_port("127.0.0.1", port, 5)
    return Running(server, port, workdir, sim.persona.framing)


@pytest.fixture(params=STRING_RELEASES, ids=["2019-2020-len4", "2021-2022-len8"])
def server(request: pytest.FixtureRequest, it_workdir: Path) -> Iterator[Running]:
    running = start_server(it_workdir, *request.param)
    yield running
    running.server.stop.set()
    running.server.sim.shutdown()


def frame(text: str, framing: str, number: int) -> bytes:
    """The packet as the sources describe it (built here by hand, independent of both implementations)."""
    payload = text.encode()
    if framing == "len4":
        return bytes([0, 0, 0, 4 + len(payload)]) + payload
    return bytes([0, 0, 0, 8 + len(payload), 0, 0, 0, number]) + payload


class Conn:
    def __init__(self, port: int, framing: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.framing = framing
        self.number = 0

    def ask(self, text: str) -> bytes | None:
        """The reply payload, or None if the server dropped the connection."""
        self.sock.sendall(frame(text, self.framing, self.number))
        self.number += 1
        header = 4 if self.framing == "len4" else 8
        data = b""
        try:
            while len(data) < header or len(data) < int.from_bytes(data[:4], "big"):
                chunk = self.sock.recv(4096)
                if not chunk:
                    return None
                data += chunk
        except ConnectionResetError:
            return None
        return data[header:]


def test_the_literal_packets_of_a_full_run(server: Running) -> None:
    conn = Conn(server.port, server.framing)
    assert conn.ask("Initialize") == b"InitializeDone"
    assert conn.ask("Configure,Calibration:scurve,ConfigurationFile:CMSIT.xml") == b"ConfigureDone"
    assert conn.ask("Start:{RunNumber:41}") == b"StartDone"
    assert conn.ask("Status?") == b"Running"
    deadline = time.monotonic() + 10
    while conn.ask("Status?") != b"Done":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert conn.ask("Stop") == b"StopDone"
    assert conn.ask("Halt") == b"HaltDone"
    assert (server.workdir / "Results" / "Run_41" / "Results.root").exists()
    assert not (server.workdir / "RunNumber.txt").exists()  # the run number is the client's


def test_first_packet_of_each_framing_byte_for_byte(server: Running) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    if server.framing == "len4":
        sock.sendall(b"\x00\x00\x00\x0eInitialize")
        assert sock.recv(100) == b"\x00\x00\x00\x12InitializeDone"
    else:
        sock.sendall(b"\x00\x00\x00\x12\x00\x00\x00\x00Initialize")
        assert sock.recv(100) == b"\x00\x00\x00\x16\x00\x00\x00\x00InitializeDone"


@pytest.mark.parametrize(
    "fatal",
    [
        "Progress?",
        "Abort",
        "Make coffee",
        "Configure,Calibration:clkdelay,ConfigurationFile:CMSIT.xml",
        "Status?",  # before Configure: no calibration object exists yet
        "Halt",
    ],
)
def test_anything_unknown_or_out_of_order_kills_the_server(server: Running, fatal: str) -> None:
    conn = Conn(server.port, server.framing)
    assert conn.ask("Initialize") == b"InitializeDone"
    assert conn.ask(fatal) is None
    assert not server.alive()
    with pytest.raises(OSError):
        Conn(server.port, server.framing).ask("Initialize")


def test_clock_delay_is_clockdelay_over_tcp(server: Running) -> None:
    conn = Conn(server.port, server.framing)
    conn.ask("Initialize")
    assert conn.ask("Configure,Calibration:clockdelay,ConfigurationFile:CMSIT.xml") == b"ConfigureDone"


def test_stop_mid_scan_saves_results_while_the_scan_goes_on(it_workdir: Path) -> None:
    running = start_server(it_workdir, "2019-2022", "len8", duration_s=3.0)
    conn = Conn(running.port, running.framing)
    conn.ask("Initialize")
    conn.ask("Configure,Calibration:pixelalive,ConfigurationFile:CMSIT.xml")
    assert conn.ask("Start:{RunNumber:5}") == b"StartDone"
    time.sleep(0.5)
    assert conn.ask("Stop") == b"StopDone"
    assert (it_workdir / "Results" / "Run_5" / "Results.root").exists()
    assert conn.ask("Status?") == b"Running"
    assert conn.ask("Halt") is None  # destroys objects the scan still uses
    assert not running.alive()


def test_a_packet_number_gap_kills_an_8_byte_server(it_workdir: Path) -> None:
    running = start_server(it_workdir, "2019-2022", "len8")
    sock = socket.create_connection(("127.0.0.1", running.port), timeout=5)
    sock.sendall(b"\x00\x00\x00\x12\x00\x00\x00\x00Initialize")
    assert sock.recv(100).endswith(b"InitializeDone")
    sock.sendall(b"\x00\x00\x00\x12\x00\x00\x00\x05Initialize")
    assert sock.recv(100) == b""
    assert not running.alive()


def test_a_4_byte_client_kills_an_8_byte_server(it_workdir: Path) -> None:
    running = start_server(it_workdir, "2019-2022", "len8")
    sock = socket.create_connection(("127.0.0.1", running.port), timeout=5)
    sock.sendall(b"\x00\x00\x00\x0eInitialize")  # read as length 14, packet number "Init", payload "ialize"
    assert sock.recv(100) == b""
    assert not running.alive()


def test_the_current_release_answers_strings_with_a_binary_protobuf_error(it_workdir: Path) -> None:
    running = start_server(it_workdir, "current", None)
    sock = socket.create_connection(("127.0.0.1", running.port), timeout=5)
    sock.sendall(b"\x00\x00\x00\x12\x00\x00\x00\x00Initialize")
    reply = sock.recv(200)
    assert reply[8:9] == b"\x0a" and b"Can't recognize message" in reply[8:]
    assert running.alive()
