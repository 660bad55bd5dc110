"""The RunController simulator speaks the length-prefixed string protocol over real TCP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ph2acf_bridge.framing import Decoder, encode
from ph2acf_sim.server import RunControllerSim, serve
from ph2acf_sim.simrun import SimSettings

from trackerdcs.localbroker import free_port, wait_port


@pytest.fixture(params=["len4", "len8"])
def server(request: pytest.FixtureRequest, it_workdir: Path) -> Iterator[tuple[int, str, Path]]:
    port = free_port()
    stop = threading.Event()
    sim = RunControllerSim("it", it_workdir, SimSettings(duration_s=0.6, matrix=(20, 16), steps=4))
    thread = threading.Thread(target=serve, args=("127.0.0.1", port, sim, request.param, stop), daemon=True)
    thread.start()
    wait_port("127.0.0.1", port, 5)
    yield port, request.param, it_workdir
    stop.set()
    thread.join(5)


class Conn:
    def __init__(self, port: int, variant: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.variant = variant
        self.decoder = Decoder(variant)  # type: ignore[arg-type]
        self.counter = 0

    def ask(self, text: str) -> str:
        self.counter += 1
        self.sock.sendall(encode(text, self.variant, self.counter))  # type: ignore[arg-type]
        while True:
            packets = self.decoder.feed(self.sock.recv(4096))
            if packets:
                if self.variant == "len8":
                    assert packets[0].counter == self.counter
                return packets[0].text


def test_full_calibration_flow_over_tcp(server: tuple[int, str, Path]) -> None:
    port, variant, workdir = server
    conn = Conn(port, variant)
    assert conn.ask("Initialize") == "InitializeDone"
    assert conn.ask("Configure,Calibration:scurve,ConfigurationFile:CMSIT.xml") == "ConfigureDone"
    assert conn.ask("Start:{RunNumber:41}") == "StartDone"
    assert conn.ask("Status?") == "Running"
    deadline = time.monotonic() + 10
    while conn.ask("Status?") != "Done":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert conn.ask("Progress?") == "Progress:100.0"
    assert conn.ask("Stop") == "StopDone"
    assert conn.ask("Halt") == "HaltDone"
    assert (workdir / "Results" / "Run000041_SCurve.root").exists()
    assert (workdir / "RunNumber.txt").read_text().strip() == "42"


def test_unknown_calibration_and_commands_are_answered_with_errors(server: tuple[int, str, Path]) -> None:
    port, variant, _ = server
    conn = Conn(port, variant)
    assert conn.ask("Configure,Calibration:scurve,ConfigurationFile:CMSIT.xml") == "Error:not initialized"
    assert conn.ask("Initialize") == "InitializeDone"
    assert conn.ask("Configure,Calibration:warpdrive,ConfigurationFile:CMSIT.xml").startswith(
        "Error:calibration 'warpdrive' not recognised"
    )
    assert conn.ask("Start:{RunNumber:1}") == "Error:not configured"
    assert conn.ask("Make coffee").startswith("Error:unknown command")


def test_stop_ends_a_run_early_with_partial_results(server: tuple[int, str, Path]) -> None:
    port, variant, workdir = server
    conn = Conn(port, variant)
    conn.ask("Initialize")
    conn.ask("Configure,Calibration:pixelalive,ConfigurationFile:CMSIT.xml")
    assert conn.ask("Start:{RunNumber:5}") == "StartDone"
    assert conn.ask("Stop") == "StopDone"
    assert conn.ask("Status?") == "Done"
    assert (workdir / "Results" / "Run000005_PixelAlive.root").exists()


def test_garbage_on_the_wire_drops_only_that_connection(server: tuple[int, str, Path]) -> None:
    port, variant, _ = server
    bad = socket.create_connection(("127.0.0.1", port), timeout=5)
    bad.sendall(b"\x00\x00\x00\x01garbage")
    assert bad.recv(10) == b""
    assert Conn(port, variant).ask("Initialize") == "InitializeDone"
