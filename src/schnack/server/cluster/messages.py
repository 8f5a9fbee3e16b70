"""Cluster bus messages (schnack bus protocol, version 1): typed, versioned, compactly encoded.

A message travels as one JSON array ``[version, kind, ...fields]``; a stanza's XML rides as a
string inside it, so a forwarding node never parses it. A node that gets a version or kind it does
not know (a newer node in a rolling upgrade) refuses it with :class:`BusMessageError`, which the
backends log and drop; it never takes the subscriber down.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

VERSION = 1


class BusMessageError(ValueError):
    """A bus message this node cannot decode: unknown version or kind, or malformed."""


@dataclass(frozen=True, slots=True)
class Deliver:
    """A stanza for a session on the receiving node: its addresses and its serialized XML."""

    kind: ClassVar[str] = "deliver"
    to: str
    sender: str
    xml: str

    def fields(self) -> list[Any]:
        """The encoded fields after version and kind."""
        return [self.to, self.sender, self.xml]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Deliver:
        """Decode the fields after version and kind."""
        if len(fields) != 3 or not all(isinstance(f, str) for f in fields):
            raise BusMessageError("deliver: needs to, from and xml strings")
        return cls(fields[0], fields[1], fields[2])


@dataclass(frozen=True, slots=True)
class NodeDown:
    """Announces that ``node`` stopped heartbeating and its directory entries were dropped."""

    kind: ClassVar[str] = "node-down"
    node: str

    def fields(self) -> list[Any]:
        """The encoded fields after version and kind."""
        return [self.node]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> NodeDown:
        """Decode the fields after version and kind."""
        if len(fields) != 1 or not isinstance(fields[0], str):
            raise BusMessageError("node-down: needs a node name")
        return cls(fields[0])


BusMessage = Deliver | NodeDown

_KINDS: dict[str, type[Deliver] | type[NodeDown]] = {Deliver.kind: Deliver, NodeDown.kind: NodeDown}


def encode(message: BusMessage, version: int = VERSION) -> bytes:
    """The wire form of ``message``."""
    return json.dumps([version, message.kind, *message.fields()], separators=(",", ":"),
                      ensure_ascii=False).encode()


def decode(data: bytes | str) -> BusMessage:
    """Decode a wire message; raises :class:`BusMessageError` for anything but a known version 1 kind."""
    try:
        items = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise BusMessageError(f"not a bus message: {err}") from None
    if not isinstance(items, list) or len(items) < 2:
        raise BusMessageError("not a bus message: expected [version, kind, ...]")
    version, kind = items[0], items[1]
    if version != VERSION or isinstance(version, bool):
        raise BusMessageError(f"unsupported bus message version {version!r} (this node speaks {VERSION})")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise BusMessageError(f"unknown bus message kind {kind!r}")
    return cls.from_fields(items[2:])
