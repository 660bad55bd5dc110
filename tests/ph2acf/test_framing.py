"""The RunController packet framing: what goes on the wire and how any split of the stream decodes."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ph2acf_bridge.framing import Decoder, FramingError, encode


def test_len4_packet_is_total_length_big_endian_then_text() -> None:
    assert encode("Status?", "len4") == b"\x00\x00\x00\x0bStatus?"


def test_len8_packet_carries_length_and_packet_number() -> None:
    assert encode("Initialize", "len8", counter=0) == b"\x00\x00\x00\x12\x00\x00\x00\x00Initialize"
    assert encode("Stop", "len8", counter=7) == b"\x00\x00\x00\x0c\x00\x00\x00\x07Stop"


def test_a_reply_decodes_from_literal_bytes() -> None:
    (packet,) = Decoder("len8").feed(b"\x00\x00\x00\x16\x00\x00\x00\x03InitializeDone")
    assert packet.text == "InitializeDone" and packet.counter == 3


@pytest.mark.parametrize("variant", ["len4", "len8"])
def test_byte_by_byte_stream_decodes_to_the_same_commands(variant: str) -> None:
    stream = b"".join(encode(m, variant, counter=i) for i, m in enumerate(["Initialize", "", "Start:{RunNumber:3}"]))
    decoder = Decoder(variant)
    packets = [p for b in stream for p in decoder.feed(bytes([b]))]
    assert [p.text for p in packets] == ["Initialize", "", "Start:{RunNumber:3}"]
    assert decoder.pending == 0
    if variant == "len8":
        assert [p.counter for p in packets] == [0, 1, 2]


@pytest.mark.parametrize("variant", ["len4", "len8"])
@given(messages=st.lists(st.text(max_size=200), max_size=8), cuts=st.lists(st.integers(0, 4000), max_size=10))
def test_any_split_of_the_stream_yields_the_messages_in_order(
    variant: str, messages: list[str], cuts: list[int]
) -> None:
    stream = b"".join(encode(m, variant) for m in messages)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    decoder = Decoder(variant)
    out = []
    for a, b in itertools.pairwise(points):
        out += [p.payload.decode() for p in decoder.feed(stream[a:b])]
    assert out == messages


@pytest.mark.parametrize("variant", ["len4", "len8"])
def test_a_length_shorter_than_the_header_is_refused(variant: str) -> None:
    with pytest.raises(FramingError, match="invalid packet length"):
        Decoder(variant).feed(b"\x00\x00\x00\x02" + b"\0" * 8)


def test_an_absurd_length_is_refused_before_buffering_it() -> None:
    with pytest.raises(FramingError):
        Decoder("len4", max_packet=1024).feed(b"\x00\x98\x96\x80")  # 10,000,000


def test_unknown_variant_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown framing variant"):
        encode("x", "len16")  # type: ignore[arg-type]
