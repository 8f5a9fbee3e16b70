"""RFC 2198 RED payloads: packing and unpacking, malformed payloads, and the sender's redundancy."""

from __future__ import annotations

import pytest

from schnack.client.calls.red import MAX_OFFSET, Block, RedError, Redundancy, pack, unpack

OPUS = 111


def test_round_trip() -> None:
    older, previous = Block(OPUS, 5760, b"\x01" * 30), Block(OPUS, 2880, b"\x02" * 90)
    primary = Block(OPUS, 0, b"\x03" * 95)
    payload = pack((older, previous), primary)
    # Two 4-byte headers, the primary's 1-byte header, then the data in the same order.
    assert len(payload) == 4 + 4 + 1 + 30 + 90 + 95
    assert payload[:4] == bytes([0x80 | OPUS]) + ((5760 << 10) | 30).to_bytes(3, "big")
    assert payload[8] == OPUS
    assert unpack(payload) == [older, previous, primary]


def test_primary_alone() -> None:
    """RFC 2198 §3: a packet may carry no redundancy; its one header byte is the primary's."""
    payload = pack((), Block(OPUS, 0, b"opus"))
    assert payload == bytes([OPUS]) + b"opus"
    assert unpack(payload) == [Block(OPUS, 0, b"opus")]


def test_the_largest_offset_and_length_fit() -> None:
    block = Block(OPUS, MAX_OFFSET, bytes(1023))
    assert unpack(pack((block,), Block(OPUS, 0, b"x")))[0] == block
    with pytest.raises(RedError):
        pack((Block(OPUS, MAX_OFFSET + 1, b"x"),), Block(OPUS, 0, b"x"))
    with pytest.raises(RedError):
        pack((Block(OPUS, 960, bytes(1024)),), Block(OPUS, 0, b"x"))
    with pytest.raises(RedError):
        pack((), Block(128, 0, b"x"))


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # no header at all
        b"\xef",  # a redundant block header cut after one byte
        b"\xef\x00\x2d",  # ... after three
        b"\xef\x00\x2c\x00",  # a complete redundant block header, then nothing: no primary header
        b"\xef\x00\x2c\x0a\x6f" + bytes(5),  # the block says 10 bytes, 5 are there
        b"\xef\xff\xff\xff\x6f",  # a block of 1023 bytes in a packet of five
    ],
)
def test_malformed_payloads_raise(payload: bytes) -> None:
    with pytest.raises(RedError):
        unpack(payload)


def test_redundancy_repeats_the_packet_before() -> None:
    red = Redundancy(OPUS)
    first = unpack(red.wrap(1000, b"one"))
    assert first == [Block(OPUS, 0, b"one")]
    assert unpack(red.wrap(3880, b"two")) == [Block(OPUS, 2880, b"one"), Block(OPUS, 0, b"two")]
    # A packet sent plain (the lean mode) is still the packet before the next RED one.
    red.sent_plain(6760, b"three")
    assert unpack(red.wrap(9640, b"four"))[0] == Block(OPUS, 2880, b"three")


def test_redundancy_leaves_out_a_packet_from_before_a_pause() -> None:
    """The offset has 14 bits (about 341 ms at 48 kHz): a packet sent a second earlier (a DTX
    keepalive) is not repeated, and the timestamp wrapping around is no pause."""
    red = Redundancy(OPUS)
    red.wrap(0, b"before")
    assert unpack(red.wrap(48000, b"after")) == [Block(OPUS, 0, b"after")]
    red.wrap(2**32 - 960, b"end")
    assert unpack(red.wrap((2**32 - 960 + 2880) % 2**32, b"wrapped"))[0] == Block(OPUS, 2880, b"end")
