"""Redundant audio: RTP payloads of RFC 2198 (sans I/O).

A RED packet carries its primary encoding and, before it, redundant blocks: earlier audio again,
each named by its payload type and how far its timestamp lies before the packet's. The headers
(RFC 2198 §3):

- a redundant block's, 4 bytes: F=1 (1 bit), block payload type (7), timestamp offset (14),
  block length (10);
- the primary's, last, 1 byte: F=0 (1 bit), block payload type (7);

then the blocks' data in the same order, the primary's running to the end of the packet.

The data saver's protected mode sends the previous packet's Opus as the one redundant block of
each packet (``red/48000/2`` with ``a=fmtp:<red> <opus>/<opus>``, as WebRTC negotiates it): a
single lost packet comes again with the next one, bit for bit, so it is decoded as if it had
arrived, where in-band FEC (RFC 6716 §2.1.7) rebuilds a coarser version of it.
"""

from __future__ import annotations

from dataclasses import dataclass

# RFC 2198 §3: the widths of a redundant block header's timestamp offset and length.
MAX_OFFSET = (1 << 14) - 1
MAX_LENGTH = (1 << 10) - 1
MAX_PAYLOAD_TYPE = 127


class RedError(ValueError):
    """A RED payload that breaks RFC 2198 §3 (truncated headers, blocks past the end)."""


@dataclass(frozen=True)
class Block:
    """One block of a RED packet: its payload type, how many timestamp units it lies before
    the packet's timestamp (0 for the primary) and its data."""

    payload_type: int
    offset: int
    data: bytes


def pack(redundant: tuple[Block, ...], primary: Block) -> bytes:
    """A RED payload: the redundant blocks (oldest first) and the primary encoding.
    :class:`RedError` for a block the headers cannot describe."""
    headers = bytearray()
    for block in redundant:
        if not 0 <= block.payload_type <= MAX_PAYLOAD_TYPE:
            raise RedError(f"payload type {block.payload_type} out of range")
        if not 0 <= block.offset <= MAX_OFFSET or len(block.data) > MAX_LENGTH:
            raise RedError(f"a block {block.offset} before, {len(block.data)} bytes, does not fit its header")
        word = (1 << 31) | (block.payload_type << 24) | (block.offset << 10) | len(block.data)
        headers += word.to_bytes(4, "big")
    if not 0 <= primary.payload_type <= MAX_PAYLOAD_TYPE:
        raise RedError(f"payload type {primary.payload_type} out of range")
    headers.append(primary.payload_type)
    return bytes(headers) + b"".join(b.data for b in redundant) + primary.data


def unpack(payload: bytes) -> list[Block]:
    """The blocks of a RED payload, oldest first, the primary last (offset 0);
    :class:`RedError` for one that is malformed."""
    headers: list[tuple[int, int, int]] = []
    at = 0
    while True:
        if at >= len(payload):
            raise RedError("RED headers run past the end of the packet")
        first = payload[at]
        if not first & 0x80:
            primary_type = first & 0x7F
            at += 1
            break
        if at + 4 > len(payload):
            raise RedError("truncated RED block header")
        word = int.from_bytes(payload[at : at + 4], "big")
        headers.append(((word >> 24) & 0x7F, (word >> 10) & MAX_OFFSET, word & MAX_LENGTH))
        at += 4
    blocks = []
    for payload_type, offset, length in headers:
        if at + length > len(payload):
            raise RedError("a RED block runs past the end of the packet")
        blocks.append(Block(payload_type, offset, payload[at : at + length]))
        at += length
    blocks.append(Block(primary_type, 0, payload[at:]))
    return blocks


class Redundancy:
    """The sending side: each payload wrapped with the one sent before it as a redundant block,
    when that one fits a block header (a packet long before, across a pause, is left out)."""

    def __init__(self, payload_type: int) -> None:
        self.payload_type = payload_type
        self._previous: tuple[int, bytes] | None = None

    def wrap(self, timestamp: int, payload: bytes) -> bytes:
        """The RED payload for ``payload`` at RTP ``timestamp``, with the previous packet's."""
        redundant: tuple[Block, ...] = ()
        if self._previous is not None:
            before, data = self._previous
            offset = (timestamp - before) % (1 << 32)  # RTP timestamps wrap (RFC 3550 §5.1)
            if 0 < offset <= MAX_OFFSET and len(data) <= MAX_LENGTH:
                redundant = (Block(self.payload_type, offset, data),)
        self._previous = (timestamp, payload)
        return pack(redundant, Block(self.payload_type, 0, payload))

    def sent_plain(self, timestamp: int, payload: bytes) -> None:
        """A payload sent without RED: the next RED packet carries it all the same (it is still
        the packet before, whose loss the receiver would otherwise conceal)."""
        self._previous = (timestamp, payload)
