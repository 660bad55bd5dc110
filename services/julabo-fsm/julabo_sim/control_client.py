"""Client of the simulator's fault-injection control port: one text line out, one answer line back."""

from __future__ import annotations

import socket


def send(port: int, command: str, host: str = "127.0.0.1", timeout: float = 3.0) -> str:
    """Send ``command`` (e.g. ``"bath 30"``, ``"unplug"``, ``"state"``) and return the answer line, stripped."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(command.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()
