"""Length-prefixed packets of the Ph2_ACF MiddlewareController TCP protocol (pure, no I/O).

Two header variants exist (public Ph2_ACF sources):

* ``len4`` (2019-2020 builds): a 4-byte big-endian unsigned total length (header included), then the payload;
* ``len8`` (2021 on): the same 4-byte total length followed by a 4-byte big-endian packet number; the receiver
  requires consecutive numbers (the bridge numbers its packets 0, 1, 2, ... on each connection).

:func:`encode` builds one packet; :class:`Decoder` accepts bytes as they arrive from a socket (any split,
several packets per read) and returns the complete payloads.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Literal

Variant = Literal["len4", "len8"]
HEADER_SIZES: dict[str, int] = {"len4": 4, "len8": 8}
MAX_PACKET = 16 * 1024 * 1024


class FramingError(ValueError):
    """The byte stream cannot be a sequence of valid packets (the connection must be dropped)."""


@dataclass(frozen=True)
class Packet:
    """One decoded packet: its payload and, for the ``len8`` variant, its counter."""

    payload: bytes
    counter: int | None = None

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", errors="replace")


def header_size(variant: Variant) -> int:
    """Bytes of header for ``variant``; raises ValueError for unknown variants."""
    try:
        return HEADER_SIZES[variant]
    except KeyError:
        raise ValueError(f"unknown framing variant {variant!r}; use one of {', '.join(HEADER_SIZES)}") from None


def encode(message: str | bytes, variant: Variant = "len4", counter: int = 0) -> bytes:
    """One packet carrying ``message`` (str is UTF-8 encoded)."""
    payload = message.encode("utf-8") if isinstance(message, str) else bytes(message)
    size = header_size(variant)
    total = size + len(payload)
    if total > MAX_PACKET:
        raise FramingError(f"packet of {total} bytes exceeds the limit of {MAX_PACKET}")
    if variant == "len4":
        return struct.pack(">I", total) + payload
    return struct.pack(">II", total, counter & 0xFFFFFFFF) + payload


@dataclass
class Decoder:
    """Incremental decoder: ``feed(bytes)`` returns the packets completed by those bytes."""

    variant: Variant = "len4"
    max_packet: int = MAX_PACKET
    _buffer: bytearray = field(default_factory=bytearray, repr=False)

    def __post_init__(self) -> None:
        self._header = header_size(self.variant)

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete packet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Packet]:
        """Add ``data`` and return every packet now complete, in order. Raises FramingError on garbage."""
        self._buffer.extend(data)
        packets: list[Packet] = []
        while len(self._buffer) >= self._header:
            (total,) = struct.unpack_from(">I", self._buffer, 0)
            if total < self._header or total > self.max_packet:
                raise FramingError(f"invalid packet length {total} (header {self._header}, max {self.max_packet})")
            if len(self._buffer) < total:
                break
            counter = struct.unpack_from(">I", self._buffer, 4)[0] if self.variant == "len8" else None
            packets.append(Packet(bytes(self._buffer[self._header : total]), counter))
            del self._buffer[:total]
        return packets
