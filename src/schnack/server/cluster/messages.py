"""Cluster bus messages (schnack bus protocol, version 1): typed, versioned, compactly encoded.

A message travels as one JSON array ``[version, kind, ...fields]``; a stanza's XML rides as a
string inside it, so a forwarding node never parses it. A node that gets a version or kind it does
not know (a newer node in a rolling upgrade) refuses it with :class:`BusMessageError`, which the
backends log and drop; it never takes the subscriber down. Fields added within version 1 are
optional and trailing, written only when set, and chosen so that an older node dropping a message
that carries one loses nothing (see :class:`Done`); kinds are added within version 1 on the same
terms, as one whose loss its sender notices and can tell (see :class:`Request`). The version
changes only when a message that older nodes would accept changes its meaning.
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
    """A stanza of any kind for the receiving node: for the session or account ``to`` (which may
    differ from the stanza's own 'to': one share of a message to a bare JID goes to a full JID) or
    for a group chat room that node owns, with the stanza's serialized XML.

    ``copy`` marks a copy for that session only (a carbon, a group's fan-out): dropped when the
    session is gone, where a message itself would go to offline storage. ``ask`` is a token
    ``{node}:{id}`` of a node that waits until the receiving node has handled the stanza (a group
    message stored in the room's archive and sent out, or refused): that node then gets
    :class:`Done` with the token. ``mark`` numbers a room's copies to one occupancy,
    ``{occupancy}:{n}`` from 1 on without a gap (see :mod:`.groups`), so that the receiving node
    sees when one went missing on the bus. Each is encoded only when set, so a plain delivery
    keeps the three-field form. A node of before marks drops a marked copy as malformed: an
    occupant there misses the room's messages until it joins again, so a cluster upgrades across
    marks by restarting all its nodes at once.
    """

    kind: ClassVar[str] = "deliver"
    to: str
    sender: str
    xml: str
    copy: bool = False
    ask: str = ""
    mark: str = ""

    def fields(self) -> list[Any]:
        """The encoded fields after version and kind."""
        if self.mark:
            return [self.to, self.sender, self.xml, self.copy, self.ask, self.mark]
        if self.ask:
            return [self.to, self.sender, self.xml, self.copy, self.ask]
        return [self.to, self.sender, self.xml, *([True] if self.copy else [])]

    @property
    def asker(self) -> str:
        """The node that waits for :class:`Done` (empty when none does)."""
        return self.ask.partition(":")[0]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Deliver:
        """Decode the fields after version and kind."""
        if len(fields) not in (3, 4, 5, 6) or not all(isinstance(f, str) for f in fields[:3]):
            raise BusMessageError("deliver: needs to, from and xml strings")
        if len(fields) >= 4 and not isinstance(fields[3], bool):
            raise BusMessageError("deliver: the copy flag must be a boolean")
        ask = fields[4] if len(fields) >= 5 else ""
        # A marked copy that asks for nothing writes its ask token empty.
        if len(fields) >= 5 and (not isinstance(ask, str) or (":" not in ask and (ask or len(fields) == 5))):
            raise BusMessageError("deliver: the ask token must be a string node:id")
        mark = fields[5] if len(fields) == 6 else ""
        if len(fields) == 6 and (not isinstance(mark, str) or mark_number(mark) is None):
            raise BusMessageError("deliver: the mark must be a string occupancy:number")
        return cls(fields[0], fields[1], fields[2], len(fields) >= 4 and fields[3], ask, mark)


def mark_number(mark: str) -> int | None:
    """The number in a :attr:`Deliver.mark`, None when it is not one."""
    occupancy, colon, number = mark.rpartition(":")
    if not colon or not occupancy or not number.isascii() or not number.isdigit() or number.startswith("0"):
        return None
    return int(number)


@dataclass(frozen=True, slots=True)
class Done:
    """Tells the node that asked (:attr:`Deliver.ask`) that the stanza ``token`` names was handled.

    ``refusal`` is the serialized error stanza the receiving node answered it with (a room that
    refused a group message), empty when it was accepted. It rides inside the answer so that the
    two cannot be parted: the asker hears "handled" only together with "refused", never without
    it. It is encoded only when set, so an acceptance keeps the one-field form; a node of before
    this field drops a refusal as malformed, and its asker then times out and lets its client
    send again, which loses nothing.
    """

    kind: ClassVar[str] = "done"
    token: str
    refusal: str = ""

    def fields(self) -> list[Any]:
        """The encoded fields after version and kind."""
        return [self.token, self.refusal] if self.refusal else [self.token]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Done:
        """Decode the fields after version and kind."""
        if len(fields) not in (1, 2) or not isinstance(fields[0], str):
            raise BusMessageError("done: needs a token")
        if len(fields) == 2 and (not isinstance(fields[1], str) or not fields[1]):
            raise BusMessageError("done: the refusal must be a stanza's XML")
        return cls(fields[0], fields[1] if len(fields) == 2 else "")


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


@dataclass(frozen=True, slots=True)
class Changed:
    """Announces to every node that ``store`` of ``account``, which nodes keep in memory (a
    blocklist, push registrations), was changed through ``node``: the others drop their copy and
    read storage again when they need it."""

    kind: ClassVar[str] = "changed"
    node: str
    store: str
    account: str

    def fields(self) -> list[Any]:
        """The encoded fields after version and kind."""
        return [self.node, self.store, self.account]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Changed:
        """Decode the fields after version and kind."""
        if len(fields) != 3 or not all(isinstance(field, str) and field for field in fields):
            raise BusMessageError("changed: needs a node, a store and an account")
        return cls(fields[0], fields[1], fields[2])


@dataclass(frozen=True, slots=True)
class Request:
    """Asks the receiving node what only it can answer, or to do what only it may do: ``topic``
    names the kind of request (``rooms``: ``schnack admin room`` for a room that node serves),
    ``body`` is a JSON object. The node answers with :class:`Reply` to the node in ``token``
    (``{node}:{id}``). A node of before this kind drops a request as unknown, unanswered: the
    asker times out and says that the node did not answer, which loses nothing, since nothing
    was done."""

    kind: ClassVar[str] = "request"
    token: str
    topic: str
    body: dict[str, Any]

    def fields(self) -> list[Any]:
        """The encoded fields after version and kind."""
        return [self.token, self.topic, self.body]

    @property
    def asker(self) -> str:
        """The node that waits for the :class:`Reply`."""
        return self.token.partition(":")[0]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Request:
        """Decode the fields after version and kind."""
        if len(fields) != 3 or not isinstance(fields[0], str) or ":" not in fields[0]:
            raise BusMessageError("request: needs a token node:id, a topic and a body")
        if not isinstance(fields[1], str) or not fields[1] or not isinstance(fields[2], dict):
            raise BusMessageError("request: needs a token node:id, a topic and a body")
        return cls(fields[0], fields[1], fields[2])


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to the :class:`Request` that ``token`` names: ``body``, a JSON object."""

    kind: ClassVar[str] = "reply"
    token: str
    body: dict[str, Any]

    def fields(self) -> list[Any]:
        """The encoded fields after version and kind."""
        return [self.token, self.body]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Reply:
        """Decode the fields after version and kind."""
        if len(fields) != 2 or not isinstance(fields[0], str) or not isinstance(fields[1], dict):
            raise BusMessageError("reply: needs a token and a body")
        return cls(fields[0], fields[1])


BusMessage = Deliver | Done | Request | Reply | NodeDown | Changed
# What a node's subscribers get: stanzas and requests, and the answers to what it asked.
NodeMessage = Deliver | Done | Request | Reply
NODE_MESSAGES = (Deliver, Done, Request, Reply)

_KINDS: dict[str, type[BusMessage]] = {
    cls.kind: cls for cls in (Deliver, Done, Request, Reply, NodeDown, Changed)}


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
