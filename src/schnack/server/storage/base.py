"""The storage interface: accounts, roster, key-value, map and archive (DESIGN.md, Storage)."""

from __future__ import annotations

import asyncio
import binascii
import json
import os
import threading
import time
from collections.abc import Mapping, MutableSequence, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from mypy_extensions import mypyc_attr

from ...xmpp.sasl import ScramCredential

__all__ = [
    "Account", "AlreadyExists", "ArchiveFull", "ArchivePage", "ArchivedItem", "ItemNotFound", "MucStore",
    "RoomAffiliation", "RosterItem", "ScramCredential", "Storage", "StorageError", "StoredRoom", "TooLong",
]  # fmt: skip


def credentials_to_json(credentials: dict[str, ScramCredential]) -> str:
    """Stored credentials as text, for backends that keep them in one column."""
    return json.dumps({k: [c.salt.hex(), c.iterations, c.stored_key.hex(), c.server_key.hex()]
                       for k, c in credentials.items()})


def credentials_from_json(text: str) -> dict[str, ScramCredential]:
    """The inverse of :func:`credentials_to_json`."""
    return {k: ScramCredential(bytes.fromhex(s), i, bytes.fromhex(st), bytes.fromhex(sv))
            for k, (s, i, st, sv) in json.loads(text).items()}


class StorageError(Exception):
    """A backend failure or a bad storage URL."""


# Archives whose number of items storage keeps (table archive_counts: SQLite migration 0004,
# PostgreSQL 0005), so that ``count`` and an append's ``limit`` read one row: the offline store
# (XEP-0160), bounded per account. Other archives are counted by reading their items when asked.
BOUNDED_STORES = frozenset({"offline"})

# How long, in seconds, a deleted account takes no new data unless it is registered again
# (AccountGone): long enough for whatever was routed or queued to it before its deletion to have
# come to be written, which takes seconds at most.
DELETED_FOR = 600.0

# base64's alphabet as base64url's characters in ASCII order: the ids compare as the bytes they
# encode do. A table of bytes, applied before decoding: a string's translate costs ten times more.
_SORTABLE: Final = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                            b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")  # fmt: skip


class _RandomBytes:
    """Bytes from ``os.urandom``, read a block at a time: a system call per 1,024 archive ids
    instead of one per id (3.6 % of the server's time per message, docs/benchmarks.md). No two
    takers get the same bytes, in one thread or several; a child process reads a block of its
    own."""

    __slots__ = ("_at", "_block", "_lock")
    BLOCK = 6144

    def __init__(self) -> None:
        self._block = b""
        self._at = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bytes:
        with self._lock:
            at = self._at
            if at + n > len(self._block):
                self._block = os.urandom(self.BLOCK)
                at = 0
            self._at = at + n
            return self._block[at:at + n]

    def discard(self) -> None:
        self._block = b""
        self._at = 0
        self._lock = threading.Lock()


_random: Final = _RandomBytes()
os.register_at_fork(after_in_child=_random.discard)


def new_item_id() -> str:
    """A new archive item's id (its XEP-0359 stanza-id, the RSM key of XEP-0313 queries): 16
    URL-safe characters for the millisecond it was made and 48 random bits, so that ids sort by
    time. The id index then grows at its end, as the archive does: an append changes the page the
    last ones changed, where a random id changed a random page of the index each time (17 % more
    of SQLite's time per append, docs/benchmarks.md)."""
    stamp = time.time_ns() // 1_000_000
    return binascii.b2a_base64(stamp.to_bytes(6, "big") + _random.take(6), newline=False).translate(_SORTABLE).decode()


Row = tuple[str, str, str, str, float, str, bytes, str]
"""An archive item as a backend writes it: id, host, username, store, timestamp, with, payload,
resource."""
Appending = tuple[Row, int | None, "asyncio.Future[str]"]
"""An append waiting to be written: its row, its limit, and the future its caller awaits."""


# Both backends' archives derive from it, and they are not compiled (setup.py).
@mypyc_attr(allow_interpreted_subclasses=True)
class QueuedAppends:
    """Appends with group commit, as both backends make them: an append waits in ``_waiting`` in
    the order issued, for the writer the backend starts in :meth:`_write_soon` (when none runs),
    which writes what waits together and settles each future with its outcome. Appends are
    written in the order they were issued, so a read that waits for the last one issued before
    it (:meth:`appended`) sees them all."""

    _waiting: MutableSequence[Appending]
    _last: asyncio.Future[str] | None = None

    def append_soon(self, host: str, username: str, store: str, timestamp: float, with_jid: str, payload: bytes,
                    *, limit: int | None = None, item_id: str | None = None, resource: str = "") -> asyncio.Future[str]:
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        try:
            check_names(host, username, store, with_jid, resource)
        except TooLong as err:
            done.set_exception(err)
            return done
        row = (item_id or new_item_id(), host, username, store, timestamp, with_jid, payload, resource)
        self._waiting.append((row, limit, done))
        self._last = done
        self._write_soon()
        return done

    async def append(self, host: str, username: str, store: str, timestamp: float, with_jid: str, payload: bytes,
                     *, limit: int | None = None, item_id: str | None = None, resource: str = "") -> str:
        return await self.append_soon(host, username, store, timestamp, with_jid, payload, limit=limit,
                                      item_id=item_id, resource=resource)

    def _write_soon(self) -> None:
        raise NotImplementedError

    async def appended(self) -> None:
        """Wait until every append issued so far is done (committed or refused)."""
        last = self._last
        if last is not None and not last.done():
            await asyncio.wait((last,))


# What a client is told when storage cannot be reached (PostgreSQL restarting): try again soon.
STORAGE_DOWN = "storage is unavailable for the moment; try again shortly"


class TooLong(StorageError):
    """A write whose names (see :func:`check_names`) are together longer than storage keeps."""


# The most bytes (UTF-8) that the names keying a row may take together: host, username, store and
# key, a roster item's JID, an archived item's contact. PostgreSQL's B-tree index entries hold at
# most 2,704 bytes (the page's third, less what the entry's header and other columns take), and
# a longer key failed there as if storage were down; SQLite refuses the same, so that both keep
# the same names.
NAME_BYTES: Final = 2400


def check_names(*names: str) -> None:
    """Raise TooLong if ``names`` take more than NAME_BYTES together."""
    # At most 4 bytes a character: most writes are known short without encoding anything. A loop
    # of lengths compiles to native code; sum over map calls back into the interpreter.
    characters = 0
    for name in names:
        characters += len(name)
    if characters * 4 > NAME_BYTES and sum(len(name.encode()) for name in names) > NAME_BYTES:
        raise TooLong(f"names of {sum(len(name.encode()) for name in names)} bytes; "
                      f"storage keeps at most {NAME_BYTES} bytes of names a row")


class AlreadyExists(StorageError):
    """The account exists already."""


class ItemNotFound(StorageError):
    """An RSM paging id that is not in the archive."""


class AccountGone(StorageError):
    """A write of what an account keeps (an archive append, a roster item, a stored value) for an
    account deleted meanwhile: it was routed or queued before the deletion, and came to be
    written after it."""


class ArchiveFull(StorageError):
    """An append with a limit found the archive holding that many items already."""


class DuplicateItem(StorageError):
    """An append whose ``item_id`` an item of an archive has already: ids are unique across all
    archives, so a caller that derives one from what the item is learns that it is stored."""


@dataclass(frozen=True, slots=True)
class Account:
    host: str
    username: str
    credentials: dict[str, ScramCredential]
    created: float


@dataclass(frozen=True, slots=True)
class RosterItem:
    """RFC 6121 §2.1.2."""

    jid: str
    name: str | None = None
    subscription: str = "none"
    ask: bool = False
    approved: bool = False
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ArchivedItem:
    id: str
    timestamp: float
    with_jid: str
    payload: bytes
    # Its place in the archive's order: never given to another item, even once it is deleted.
    seq: int
    # The resource of the address ``with_jid`` was taken from ('' if it had none); None for an item
    # archived before resources were kept (SQLite migration 0007, PostgreSQL 0008).
    resource: str | None = None


@dataclass(frozen=True, slots=True)
class ArchivePage:
    items: list[ArchivedItem]
    complete: bool
    count: int | None = None


class AccountStore(Protocol):
    async def create(self, host: str, username: str, credentials: dict[str, ScramCredential]) -> None: ...
    async def get(self, host: str, username: str) -> Account | None: ...
    async def set_credentials(self, host: str, username: str, credentials: dict[str, ScramCredential]) -> bool: ...
    async def delete(self, host: str, username: str) -> bool: ...
    async def list(self, host: str) -> list[str]: ...


class RosterStore(Protocol):
    async def get(self, host: str, username: str) -> tuple[int, dict[str, RosterItem]]: ...
    async def get_item(self, host: str, username: str, jid: str) -> RosterItem | None: ...
    async def set_item(self, host: str, username: str, item: RosterItem) -> int: ...
    async def remove_item(self, host: str, username: str, jid: str) -> int: ...


class KeyValueStore(Protocol):
    async def get(self, host: str, username: str, store: str) -> bytes | None: ...
    async def set(self, host: str, username: str, store: str, value: bytes | None) -> None: ...

    async def set_default(self, host: str, username: str, store: str, value: bytes) -> bytes:
        """Store ``value`` unless something is stored already; what is stored after. Of several
        callers at once (cluster nodes starting together), the first to store wins for all."""
        ...

    async def replace(self, host: str, username: str, store: str, old: bytes, new: bytes) -> bool:
        """Store ``new`` if ``old`` is what is stored (compare and set); whether it was. Of several
        callers replacing the same ``old`` at once, one succeeds."""
        ...

    async def delete(self, host: str, username: str, store: str) -> None: ...

    async def delete_if(self, host: str, username: str, store: str, value: bytes) -> bool:
        """Delete the key if ``value`` is what is stored (compare and delete); whether it was."""
        ...


class MapStore(Protocol):
    async def get(self, host: str, username: str, store: str, key: str) -> bytes | None: ...
    async def set(self, host: str, username: str, store: str, key: str, value: bytes | None) -> None: ...

    async def set_many(self, host: str, username: str, store: str, changes: Mapping[str, bytes | None]) -> None:
        """Set (or, for None, remove) several keys in one transaction: all of them or, if one is
        refused (TooLong, AccountGone, StorageError), none."""
        ...

    async def delete_if(self, host: str, username: str, store: str, key: str, value: bytes) -> bool:
        """Remove ``key`` if ``value`` is what it holds (compare and delete); whether it did."""
        ...

    async def items(self, host: str, username: str, store: str) -> dict[str, bytes]: ...
    async def delete_all(self, host: str, username: str, store: str) -> None: ...


class ArchiveStore(Protocol):
    """Archives of items in the order they were appended. A read (query, count, delete) sees every
    append issued before it through the same store, once that is committed."""

    async def append(self, host: str, username: str, store: str, timestamp: float, with_jid: str, payload: bytes,
                     *, limit: int | None = None, item_id: str | None = None, resource: str = "") -> str:
        """Append one item; its id, once it is committed. ``resource`` is that of the address
        ``with_jid`` was taken from (a contact's full JID, a sender's occupant JID), for
        :meth:`query` to filter by. With ``limit``, only if the archive holds
        fewer items than that, checked in the transaction that appends (else ArchiveFull). The id
        is ``item_id`` when given (made by :func:`new_item_id`, for a caller that shows it before
        the item is committed, or derived from the item, for one that must store it once), else a
        new one; DuplicateItem when an item has that id already, full archive or not, and nothing
        is written."""
        ...

    def append_soon(self, host: str, username: str, store: str, timestamp: float, with_jid: str, payload: bytes,
                    *, limit: int | None = None, item_id: str | None = None,
                    resource: str = "") -> asyncio.Future[str]:
        """As :meth:`append`, issued now without waiting: the future holds the id once committed."""
        ...

    async def query(
        self, host: str, username: str, store: str, *, with_jid: str | None = None, start: float | None = None,
        end: float | None = None, ids: Sequence[str] | None = None, after: str | None = None,
        before: str | None = None, limit: int | None = None, reverse: bool | None = None, count: bool = True,
        after_id: str | None = None, before_id: str | None = None, resource: str | None = None,
    ) -> ArchivePage:
        """Items matching the filters, oldest first; ``after`` and ``before`` are exclusive id bounds,
        and ItemNotFound when not in the archive, whether or not any item matches the filters.
        ``after_id`` and ``before_id`` are exclusive id bounds too, but of the set of items
        matching (XEP-0313 §4.1.3), which ``count`` counts; ``after`` and ``before`` page through
        that set.

        ``reverse`` takes the page (``limit`` items) from the newest end; by default it does when
        ``before`` is given, as paging backwards does (XEP-0059 §2.3). ``complete`` says whether
        the page reaches the end it moves towards. The page's ``count`` is the number of items
        matching the filters, whatever the bounds and the limit; it costs a read of all of them,
        so ``count=False`` leaves it out (None).

        ``resource`` (not empty) takes the items appended with that resource, found by an index,
        and those archived before resources were kept (their ``resource`` None), which the caller
        checks itself; ``count`` counts both.
        """
        ...

    async def delete(self, host: str, username: str, store: str, *, ids: Sequence[str] | None = None,
                     before: float | None = None) -> int: ...
    async def put_back(self, host: str, username: str, store: str, items: Sequence[ArchivedItem]) -> None:
        """Put ``items``, read from this archive and deleted since, back in their places in its
        order, with their ids; one that is still there stays as it is. No limit applies: they
        were in before."""
        ...

    async def count(self, host: str, username: str, store: str) -> int:
        """The number of items in the archive (one row read for BOUNDED_STORES)."""
        ...


@dataclass(frozen=True, slots=True)
class StoredRoom:
    """A group chat room (XEP-0045) as kept: ``config`` is the room module's own JSON."""

    service: str
    name: str
    config: str
    created: float


@dataclass(frozen=True, slots=True)
class RoomAffiliation:
    """XEP-0045 §5.2: a bare JID's affiliation with a room, with its reserved nick and the reason.
    ``since`` is when the bare JID became affiliated (seconds since the epoch), None for an
    affiliation stored before storage kept that (SQLite migration 0006, PostgreSQL 0007)."""

    jid: str
    affiliation: str
    nick: str | None = None
    reason: str | None = None
    since: float | None = None


class MucStore(Protocol):
    """Group chat rooms and their affiliations (tables ``muc_rooms`` and ``muc_affiliations``)."""

    async def save_room(self, service: str, name: str, config: str) -> None: ...
    async def get_room(self, service: str, name: str) -> StoredRoom | None: ...
    async def rooms(self, service: str) -> list[StoredRoom]: ...
    async def delete_room(self, service: str, name: str) -> bool:
        """Forget the room and its affiliations; False if there was no such room."""
        ...

    async def affiliations(self, service: str, name: str) -> dict[str, RoomAffiliation]: ...
    async def set_affiliation(self, service: str, name: str, item: RoomAffiliation) -> None:
        """Store ``item``; the affiliation ``none`` removes the bare JID's record."""
        ...

    async def rooms_of(self, jid: str) -> list[tuple[str, str, str]]:
        """(service, room, affiliation) of every room where ``jid`` has an affiliation."""
        ...

    async def forget_jid(self, jid: str) -> int:
        """Remove every affiliation of ``jid`` (its account is gone); how many."""
        ...

    async def replace_archived(self, service: str, name: str, store: str, item_id: str, payload: bytes) -> bool:
        """Put ``payload`` in place of an item of the room's archive (a moderation tombstone)."""
        ...


class Storage(Protocol):
    accounts: AccountStore
    roster: RosterStore
    kv: KeyValueStore
    maps: MapStore
    archive: ArchiveStore
    muc: MucStore

    async def close(self) -> None: ...
