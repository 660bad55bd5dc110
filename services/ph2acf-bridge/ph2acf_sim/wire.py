"""The simulator's side of the Ph2_ACF TCP packet format (pure, no I/O), written from the public sources.

* ``len4`` (2019-2020 builds): 4-byte big-endian total length (header included), then the payload.
* ``len8`` (2021 on): 4-byte big-endian total length (8 header bytes included), then a 4-byte big-endian
  packet number, then the payload. A receiver insists on consecutive packet numbers.

A server that finds a broken stream gives up on it: :class:`WireError`.
"""

from __future__ import annotations

LIMIT = 1 << 24


class WireError(ValueError):
    """The byte stream is not what this release expects."""


def pack(payload: bytes, framing: str, number: int = 0) -> bytes:
    """One packet of ``payload``."""
    if framing == "len4":
        return (len(payload) + 4).to_bytes(4, "big") + payload
    if framing == "len8":
        return (len(payload) + 8).to_bytes(4, "big") + (number & 0xFFFFFFFF).to_bytes(4, "big") + payload
    raise ValueError(f"unknown framing {framing!r}")


class Unpacker:
    """Collects bytes from a socket and hands out complete payloads, checking packet numbers (``len8``)."""

    def __init__(self, framing: str) -> None:
        if framing not in ("len4", "len8"):
            raise ValueError(f"unknown framing {framing!r}")
        self.framing = framing
        self.header = 4 if framing == "len4" else 8
        self.buffer = bytearray()
        self.expected: int | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Payloads completed by ``data``; raises WireError on an impossible length or a packet number gap."""
        self.buffer += data
        out: list[bytes] = []
        while len(self.buffer) >= self.header:
            total = int.from_bytes(self.buffer[0:4], "big")
            if total < self.header or total > LIMIT:
                raise WireError(f"impossible packet length {total}")
            if len(self.buffer) < total:
                break
            if self.framing == "len8":
                number = int.from_bytes(self.buffer[4:8], "big")
                if self.expected is not None and number != self.expected:
                    raise WireError(f"packet number {number}, expected {self.expected}")
                self.expected = (number + 1) & 0xFFFFFFFF
            out.append(bytes(self.buffer[self.header : total]))
            del self.buffer[:total]
        return out
