"""The client's local store: one directory per account, holding its SQLite file and its secrets.

``<client dir>/<account>/store.sqlite`` keeps the messages (direction, peer, time, XEP-0359
origin-id and stanza-id, the 'id' that receipts, markers and corrections name, delivery state,
XEP-0308 corrections), where the catch-up from the server's archive (XEP-0313) stopped, the
outbox of messages the server has not acknowledged yet (XEP-0198), the receipts owed for messages
that arrived (XEP-0184) and the markers owed for conversations read (XEP-0333), the roster cache
(RFC 6121 §2) and how to reach the server. The OMEMO state lives next to it. The password never goes into the database: it is kept in the system keyring (the
``keyring`` package) where one works, else in ``<account>/password``, readable by its owner only;
the FAST login token (XEP-0484) is kept the same way (``<account>/fast-token``).

The client directory is the one given, else ``$SCHNACK_CLIENT_DIR``, else the platform's user data
directory (platformdirs). Every write is committed before the call returns, on a WAL database:
a message is on disk before it is sent, and one that arrived is recorded, with the receipt it
asked for, before the server hears that it was handled. Several processes of one account may share the file (SQLite locks it).
A file that cannot be opened, read or written (damaged, locked for too long, on a full disk)
raises :class:`StoreError`, which names the directory where it can.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import platformdirs

from ..xmpp.errors import StreamError
from ..xmpp.jid import JID, JIDError
from ..xmpp.parser import parse_frame
from ..xmpp.xml import serialize
from .features.roster import Contact

log = logging.getLogger(__name__)

FILENAME = "store.sqlite"
PASSWORD_FILE = "password"
KEYRING_SERVICE = "schnack"
ENV_DIR = "SCHNACK_CLIENT_DIR"
# The life of a message we sent, in order; a state only ever moves forward: stored ("pending"),
# written on the link ("sent"), acknowledged by the server ("acked", XEP-0198), delivered to a
# device of the recipient ("delivered", XEP-0184 or XEP-0333 received) and read ("read", XEP-0333
# displayed). "failed" (an error reply before it was delivered) ends it. A message that arrived is
# "delivered" here, and "read" once shown as read (on any of our devices).
STATES = ("pending", "sent", "acked", "delivered", "read")
FAILED = "failed"
_RANK = {state: rank for rank, state in enumerate(STATES)}
_MAX_STANZA = 16 * 1024 * 1024

_SCHEMA = (
    """
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        peer TEXT NOT NULL,
        direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
        body TEXT NOT NULL,
        stamp TEXT NOT NULL,
        state TEXT NOT NULL,
        origin_id TEXT,
        stanza_id TEXT,
        encrypted INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        error_text TEXT
    );
    CREATE UNIQUE INDEX messages_by_origin_id ON messages (peer, direction, origin_id) WHERE origin_id IS NOT NULL;
    CREATE UNIQUE INDEX messages_by_stanza_id ON messages (stanza_id) WHERE stanza_id IS NOT NULL;
    CREATE INDEX messages_by_peer ON messages (peer, stamp);
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        message INTEGER NOT NULL UNIQUE REFERENCES messages (id) ON DELETE CASCADE,
        stanza TEXT NOT NULL
    );
    CREATE TABLE contacts (
        jid TEXT PRIMARY KEY,
        name TEXT,
        subscription TEXT NOT NULL,
        pending INTEGER NOT NULL,
        approved INTEGER NOT NULL,
        groups TEXT NOT NULL
    );
    """,
    # A correction (XEP-0308) is a row of its own, hidden from the history, whose 'replaces' names
    # the message_id of the message it corrected; that message's body is the latest text.
    """
    ALTER TABLE messages ADD COLUMN message_id TEXT;
    ALTER TABLE messages ADD COLUMN markable INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN replaces TEXT;
    ALTER TABLE messages ADD COLUMN edited TEXT;
    UPDATE messages SET message_id = origin_id WHERE direction = 'out';
    CREATE INDEX messages_by_message_id ON messages (peer, direction, message_id);
    """,
    # A group message (XEP-0045) has the group as its peer; who wrote it is its nickname there and,
    # where the group shows it, the real bare JID.
    """
    ALTER TABLE messages ADD COLUMN nick TEXT;
    ALTER TABLE messages ADD COLUMN sender TEXT;
    """,
    # A correction (XEP-0308) that came before the message it names is a message of its own;
    # 'claims' keeps that name, so that the message, when it comes, takes the corrected text.
    """
    ALTER TABLE messages ADD COLUMN claims TEXT;
    CREATE INDEX messages_by_claims ON messages (peer, direction, claims) WHERE claims IS NOT NULL;
    """,
    # What answers a message that arrived (its receipt, XEP-0184; the marker that it was read,
    # XEP-0333) is written with it, and kept until the server acknowledged it, as the outbox keeps
    # what we send.
    """
    CREATE TABLE answers (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        origin_id TEXT NOT NULL UNIQUE,
        message INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        stanza TEXT NOT NULL
    );
    """,
)


class StoreError(Exception):
    """The local store cannot be used (a broken file, a full disk, no permission)."""


class _NewerStore(Exception):
    """The file's schema is newer than this code knows; :class:`Store` reports it as StoreError."""


@dataclass(frozen=True)
class Settings:
    """How to reach the account's server: as the client's arguments of the same names."""

    host: str | None = None
    port: int | None = None
    verify: bool | Path = True
    direct_tls: bool | None = None


@dataclass(frozen=True)
class StoredMessage:
    """A message in the history: ``direction`` is "in" or "out", ``state`` one of :data:`STATES`
    or "failed" (then ``error`` is the condition and ``error_text`` the explanation, if any).
    ``message_id`` is the stanza's 'id' (receipts, markers and corrections name it); ``edited``
    is when its text was last corrected (XEP-0308), and ``text`` is then the corrected one. In a
    group (``peer`` is the group), ``nick`` and ``sender`` say who wrote it, as far as known."""

    peer: JID
    direction: str
    text: str
    stamp: datetime
    state: str
    origin_id: str | None = None
    stanza_id: str | None = None
    encrypted: bool = False
    error: str | None = None
    error_text: str | None = None
    message_id: str | None = None
    edited: datetime | None = None
    nick: str | None = None
    sender: JID | None = None


@dataclass(frozen=True)
class Conversation:
    """A conversation in the list: the contact, when its last message was, that message's text
    and ``direction`` ("in" or "out"), and how many of the contact's messages are ``unread``."""

    peer: JID
    last: datetime
    text: str
    direction: str
    unread: int


@dataclass(frozen=True)
class OutboxEntry:
    """A message waiting for the server's acknowledgement: the stanza exactly as it is sent."""

    origin_id: str
    peer: JID
    stanza: Element


def client_dir(override: str | Path | None = None) -> Path:
    """Where the accounts' directories are."""
    if override is not None:
        return Path(override)
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    return Path(platformdirs.user_data_dir("schnack", appauthor=False))


def account_dir(account: JID, base: str | Path | None = None) -> Path:
    """The directory of ``account`` (its bare JID names it: RFC 7622 forbids '/' in it)."""
    return client_dir(base) / str(account.bare)


def stored_accounts(base: str | Path | None = None) -> list[JID]:
    """The accounts that have a store in the client directory, sorted."""
    root = client_dir(base)
    found: list[JID] = []
    if not root.is_dir():
        return found
    for entry in root.iterdir():
        if not (entry / FILENAME).is_file():
            continue
        try:
            jid = JID.parse(entry.name)
        except JIDError:
            continue
        if jid.local is not None and jid.resource is None and str(jid) == entry.name:
            found.append(jid)
    return sorted(found, key=str)


def _stamp(when: datetime) -> str:
    # One fixed format in UTC, so that the text sorts as the time does.
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_stamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _create(path: Path) -> None:
    """Make a new store file at ``path``, owner-only and in WAL mode, unless another process of
    the account made one first: it is made under another name and linked into place whole,
    since two processes switching one new file to WAL at once may find it locked."""
    fresh = path.with_name(f".{path.name}.{os.getpid()}.new")
    fresh.unlink(missing_ok=True)
    # Owner-only before SQLite opens it: its WAL and shared-memory files take the same mode.
    os.close(os.open(fresh, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    try:
        db = sqlite3.connect(fresh, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
        finally:
            db.close()
        with contextlib.suppress(FileExistsError):
            os.link(fresh, path)
    finally:
        fresh.unlink()


class Store:
    """One account's store in ``directory`` (created owner-only), or in memory without one."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        try:
            if directory is None:
                self._db = sqlite3.connect(":memory:", isolation_level=None)
            else:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                path = directory / FILENAME
                if not path.exists():
                    _create(path)
                self._db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
            offset = self._row("SELECT value FROM settings WHERE key = 'clock_offset'")
        except (sqlite3.Error, OSError, _NewerStore) as err:
            # No connection to close when connecting itself failed.
            with contextlib.suppress(AttributeError):
                self._db.close()
            raise StoreError(f"cannot open the local store in {directory}: {err}") from None
        self._clock_offset = timedelta(seconds=float(offset[0])) if offset is not None else timedelta()
        # Answers the server acknowledged, deleted with the next write of a message or at close:
        # a commit of their own would cost a disk flush per message that arrived, and one whose
        # deletion a crash lost is only sent once more, which changes nothing.
        self._answered: set[str] = set()

    def _migrate(self) -> None:
        """Bring the file to the current schema. The version that counts is the one read under the
        write lock: another process of the account may have created or upgraded the file since
        this one looked."""
        if self._known_version() == len(_SCHEMA):
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self._known_version()
            for script in _SCHEMA[version:]:
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {len(_SCHEMA)}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _known_version(self) -> int:
        """The file's schema version, refused when a newer schnack wrote it: this code would misread
        its columns and write rows its schema does not expect."""
        version: int = self._row("PRAGMA user_version")[0]
        if version > len(_SCHEMA):
            raise _NewerStore(f"this store was written by a newer schnack (schema {version}, this version"
                              f" knows up to {len(_SCHEMA)}); upgrade schnack")
        return version

    def close(self) -> None:
        if self._answered:
            with contextlib.suppress(StoreError), self._transaction():
                self._forget_answered()
        self._db.close()

    def now(self) -> datetime:
        """The time by the server's clock, as far as known: this device's, corrected by the offset
        last measured (:meth:`set_clock_offset`). Messages are stamped with it, so that live ones
        and those read from the archive (stamped by the server) stay in order on a device whose
        clock is off."""
        return datetime.now(UTC) + self._clock_offset

    def set_clock_offset(self, offset: timedelta) -> None:
        """Keep how far the server's clock is ahead of this device's (negative: behind)."""
        self._clock_offset = offset
        self.save_setting("clock_offset", repr(offset.total_seconds()) if offset else None)

    def _rows(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        """The rows a query finds; a damaged file raises StoreError, naming it."""
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as err:
            raise StoreError(f"cannot read the local store in {self.directory}: {err}") from None

    def _row(self, sql: str, params: tuple[object, ...] = ()) -> Any:
        """The first row a query finds, or None."""
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def _write(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.Error as err:
            raise StoreError(f"cannot write to the local store: {err}") from None

    # Settings --------------------------------------------------------------------------------

    def settings(self) -> Settings | None:
        """How to reach the server, as :meth:`save_settings` kept it; None if never saved."""
        row = self._row("SELECT value FROM settings WHERE key = 'server'")
        if row is None:
            return None
        data = json.loads(row[0])
        verify = data["verify"]
        return Settings(data["host"], data["port"], Path(verify) if isinstance(verify, str) else verify,
                        data["direct_tls"])

    def save_settings(self, settings: Settings) -> None:
        verify = str(settings.verify) if isinstance(settings.verify, Path) else settings.verify
        value = json.dumps({"host": settings.host, "port": settings.port, "verify": verify,
                            "direct_tls": settings.direct_tls})
        self._write("INSERT OR REPLACE INTO settings (key, value) VALUES ('server', ?)", (value,))

    def setting(self, key: str) -> str | None:
        """A value kept by :meth:`save_setting` (such as what the server offered last), or None."""
        row = self._row("SELECT value FROM settings WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    def save_setting(self, key: str, value: str | None) -> None:
        """Keep ``value`` under ``key`` (None forgets it); 'server' is :meth:`save_settings`' own."""
        if value is None:
            self._write("DELETE FROM settings WHERE key = ?", (key,))
        else:
            self._write("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))

    # Messages we send --------------------------------------------------------------------------

    def queue(self, peer: JID, text: str, origin_id: str, stanza: Element, *, encrypted: bool,
              replaces: str | None = None) -> None:
        """Record a message we are about to send and put it in the outbox, in one transaction; a
        correction (``replaces`` is the id of our message it corrects) changes that one's text."""
        with self._transaction():
            now = self.now()
            cursor = self._db.execute(
                "INSERT INTO messages (peer, direction, body, stamp, state, origin_id, encrypted, message_id, replaces)"
                " VALUES (?, 'out', ?, ?, 'pending', ?, ?, ?, ?)",
                (str(peer.bare), text, _stamp(now), origin_id, int(encrypted), origin_id, replaces),
            )
            if replaces is not None:
                self._replace(peer, "out", replaces, text, now)
            self._db.execute("INSERT INTO outbox (message, stanza) VALUES (?, ?)",
                             (cursor.lastrowid, serialize(stanza)))

    def outbox(self) -> list[OutboxEntry]:
        """The messages the server has not acknowledged yet, oldest first. One whose stanza does
        not parse any more (an earlier version stored text that XML cannot carry) is marked failed
        rather than left to hold back the ones after it."""
        rows = self._rows(
            "SELECT m.origin_id, m.peer, o.stanza FROM outbox o JOIN messages m ON m.id = o.message ORDER BY o.seq"
        )
        # RFC 6120 §8.3.3.1: what it holds cannot be processed.
        return self._entries(rows, "message", lambda origin_id, err: self.fail(
            origin_id, "bad-request", f"the stored message cannot be read again: {err}"))

    def answers(self) -> list[OutboxEntry]:
        """The answers to messages that arrived (receipts) the server has not acknowledged yet,
        oldest first; ``peer`` is whom they go to. One that does not parse any more is dropped."""
        rows = self._rows(
            "SELECT a.origin_id, m.peer, a.stanza FROM answers a JOIN messages m ON m.id = a.message ORDER BY a.seq"
        )
        rows = [row for row in rows if row[0] not in self._answered]
        return self._entries(rows, "answer", lambda origin_id, _err: self.answered(origin_id))

    def _entries(self, rows: list[tuple[str, str, str]], kind: str,
                 broken: Callable[[str, StreamError], object]) -> list[OutboxEntry]:
        """Stored stanzas to send, parsed; one that does not parse any more goes to ``broken``."""
        entries: list[OutboxEntry] = []
        for origin_id, peer, stanza in rows:
            try:
                entries.append(OutboxEntry(origin_id, JID.parse(peer), parse_frame(stanza.encode(), _MAX_STANZA)))
            except StreamError as err:
                log.warning("the stored %s %s to %s cannot be read again (%s); it is not sent", kind, origin_id,
                            peer, err)
                broken(origin_id, err)
        return entries

    def answered(self, origin_id: str) -> None:
        """The server acknowledged (or refused) the answer ``origin_id``: it is not sent again."""
        self._answered.add(origin_id)

    def _answer(self, message: int | None, answer: tuple[str, Element]) -> None:
        """Keep ``answer`` (origin-id, stanza) with the message of row ``message`` (in a transaction)."""
        origin_id, stanza = answer
        self._db.execute("INSERT INTO answers (origin_id, message, stanza) VALUES (?, ?, ?)",
                         (origin_id, message, serialize(stanza)))

    def _forget_answered(self) -> None:
        """Delete the answers done with (in a transaction)."""
        if self._answered:
            self._db.executemany("DELETE FROM answers WHERE origin_id = ?", [(id,) for id in self._answered])
            self._answered.clear()

    def unconfirmed(self, peer: JID, text: str, *, encrypted: bool) -> str | None:
        """The origin-id of a message with this text to ``peer`` still in the outbox, if any."""
        row = self._row(
            "SELECT m.origin_id FROM outbox o JOIN messages m ON m.id = o.message"
            " WHERE m.peer = ? AND m.body = ? AND m.encrypted = ? AND m.replaces IS NULL ORDER BY o.seq LIMIT 1",
            (str(peer.bare), text, int(encrypted)),
        )
        return row[0] if row is not None else None

    def advance(self, origin_id: str, state: str) -> bool:
        """Move a message we sent forward to ``state``; True if it moved. Acknowledged (or later),
        it leaves the outbox."""
        if state not in _RANK:
            raise ValueError(f"unknown state {state!r}")
        with self._transaction():
            row = self._row("SELECT id, state FROM messages WHERE origin_id = ? AND direction = 'out'",
                            (origin_id,))
            if row is None or row[1] == FAILED or _RANK[row[1]] >= _RANK[state]:
                return False
            self._db.execute("UPDATE messages SET state = ? WHERE id = ?", (state, row[0]))
            if _RANK[state] >= _RANK["acked"]:
                self._db.execute("DELETE FROM outbox WHERE message = ?", (row[0],))
        return True

    def fail(self, origin_id: str, condition: str, text: str | None) -> bool:
        """An error reply to a message we sent: it is not sent again. True if it was ours and had
        not reached the contact: one delivered or read stays so, since the error can only be
        about a copy of it (one sent again after a lost acknowledgement)."""
        with self._transaction():
            row = self._row("SELECT id, state FROM messages WHERE origin_id = ? AND direction = 'out'", (origin_id,))
            if row is None or (row[1] != FAILED and _RANK[row[1]] >= _RANK["delivered"]):
                return False
            self._db.execute("UPDATE messages SET state = ?, error = ?, error_text = ? WHERE id = ?",
                             (FAILED, condition, text, row[0]))
            self._db.execute("DELETE FROM outbox WHERE message = ?", (row[0],))
        return True

    def sent_message(self, origin_id: str) -> StoredMessage | None:
        """A message we sent, by its origin-id."""
        row = self._row(f"SELECT {_COLUMNS} FROM messages WHERE origin_id = ? AND direction = 'out'",
                        (origin_id,))
        return _message(row) if row is not None else None

    # Messages that arrive -----------------------------------------------------------------------

    def receive(self, peer: JID, text: str, *, origin_id: str | None = None, stanza_id: str | None = None,
                stamp: datetime | None = None, encrypted: bool = False, message_id: str | None = None,
                markable: bool = False, replaces: str | None = None, outgoing: bool = False,
                nick: str | None = None, sender: JID | None = None, claims: str | None = None,
                answers: Iterable[tuple[str, Element]] = ()) -> bool:
        """Record a message that arrived; False if it is a copy of one already here: the same
        origin-id from the same sender, or the same stanza-id from our own server (XEP-0359).

        ``outgoing`` records one that this account sent from another device (a carbon, the
        archive): the server had it, so it counts as acknowledged. A correction (``replaces``)
        changes the text of the message it names, if that one is here, the same sender's in the
        same conversation (XEP-0308 §5), unless a later correction of it is here (then it is kept
        hidden); else it is kept as a message of its own. ``claims`` is the id a correction named
        whose message is not here yet: it is kept as a message of its own until that message comes,
        which then takes its text (if encrypted alike) and hides it. A group
        message names its writer with ``nick`` and, if known, ``sender`` (their real JID).
        ``answers`` (origin-id, stanza), such as its receipt, are kept with it, in the same
        transaction, until :meth:`answered`; none for a copy.
        """
        direction = "out" if outgoing else "in"
        when = stamp or self.now()
        with self._transaction():
            self._forget_answered()
            if outgoing and origin_id is None and message_id is not None and self._row(
                "SELECT 1 FROM messages WHERE peer = ? AND direction = 'out' AND message_id = ?",
                (str(peer.bare), message_id),
            ):
                # Without an origin-id, the 'id' is all that tells a carbon and the archived copy apart.
                return False
            try:
                cursor = self._db.execute(
                    "INSERT INTO messages (peer, direction, body, stamp, state, origin_id, stanza_id, encrypted,"
                    " message_id, markable, replaces, nick, sender, claims)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (str(peer.bare), direction, text, _stamp(when), "acked" if outgoing else "delivered", origin_id,
                     stanza_id, int(encrypted), message_id, int(markable), replaces, nick,
                     str(sender.bare) if sender is not None else None, claims),
                )
            except sqlite3.IntegrityError:
                return False
            for answer in answers:
                self._answer(cursor.lastrowid, answer)
            if replaces is not None and not self._replace(peer, direction, replaces, text, when):
                self._db.execute("UPDATE messages SET replaces = NULL WHERE id = ?", (cursor.lastrowid,))
            if replaces is None and message_id is not None:
                self._take_corrections(peer, direction, message_id, encrypted=encrypted)
        return True

    def _take_corrections(self, peer: JID, direction: str, message_id: str, *, encrypted: bool) -> None:
        """The message ``message_id`` just came: the corrections of it that came first, kept as
        messages of their own, give it their text, in the order they were sent, and are hidden."""
        rows = self._rows(
            "SELECT id, body, stamp FROM messages WHERE peer = ? AND direction = ? AND claims = ? AND encrypted = ?"
            " AND replaces IS NULL ORDER BY stamp, id",
            (str(peer.bare), direction, message_id, int(encrypted)),
        )
        for row_id, body, stamp in rows:
            self._replace(peer, direction, message_id, body, _parse_stamp(stamp))
            self._db.execute("UPDATE messages SET replaces = ? WHERE id = ?", (message_id, row_id))

    def _replace(self, peer: JID, direction: str, message_id: str, text: str, when: datetime) -> bool:
        """Give the message ``message_id`` of this conversation and direction the text of its
        correction of ``when``, unless it has that of a later one: the archive catch-up may read a
        correction after a newer one came live. False if that message is not here."""
        key = (str(peer.bare), direction, message_id)
        if self._row("SELECT 1 FROM messages WHERE peer = ? AND direction = ? AND message_id = ?"
                     " AND replaces IS NULL LIMIT 1", key) is None:
            return False
        self._db.execute(
            "UPDATE messages SET body = ?, edited = ? WHERE peer = ? AND direction = ? AND message_id = ?"
            " AND replaces IS NULL AND (edited IS NULL OR edited <= ?)",
            (text, _stamp(when), *key, _stamp(when)),
        )
        return True

    def known(self, peer: JID, *, origin_id: str | None = None, stanza_id: str | None = None,
              outgoing: bool = False, message_id: str | None = None) -> bool:
        """Whether a message from ``peer`` (to it if ``outgoing``) with this origin-id, or one with
        this stanza-id, is stored; one we sent without an origin-id is known by its 'id'."""
        if outgoing and origin_id is None and message_id is not None:
            row = self._row(
                "SELECT 1 FROM messages WHERE (peer = ? AND direction = 'out' AND message_id = ?) OR stanza_id = ?"
                " LIMIT 1",
                (str(peer.bare), message_id, stanza_id),
            )
            return row is not None
        if origin_id is None and stanza_id is None:
            return False
        row = self._row(
            "SELECT 1 FROM messages WHERE (peer = ? AND direction = ? AND origin_id = ?) OR stanza_id = ? LIMIT 1",
            (str(peer.bare), "out" if outgoing else "in", origin_id, stanza_id),
        )
        return row is not None

    def message(self, peer: JID, message_id: str, *, outgoing: bool) -> StoredMessage | None:
        """The message with this 'id' in the conversation with ``peer``, in one direction."""
        row = self._row(
            f"SELECT {_COLUMNS} FROM messages WHERE peer = ? AND direction = ? AND message_id = ?"
            " AND replaces IS NULL ORDER BY id DESC LIMIT 1",
            (str(peer.bare), "out" if outgoing else "in", message_id),
        )
        return _message(row) if row is not None else None

    def mark(self, peer: JID, message_id: str, state: str, *, outgoing: bool, earlier: bool,
             answer: tuple[str, Element] | None = None) -> list[str]:
        """Move the message ``message_id`` of the conversation with ``peer`` forward to ``state``
        ("delivered" or "read"), and with ``earlier`` every message of that direction before it
        too (a chat marker covers them, XEP-0333); the ids of those that moved, in order.
        A message still "sent" moves too (the receipt may overtake the server's acknowledgement,
        and proves that the server had it); one not yet sent, or failed, is left alone.
        ``answer`` (origin-id, stanza), such as the marker that tells the contact, is kept with
        the message, in the same transaction, until :meth:`answered`; only if a message with an
        id moved."""
        if state not in ("delivered", "read"):
            raise ValueError(f"only 'delivered' and 'read' are marked, not {state!r}")
        direction = "out" if outgoing else "in"
        lower = [s for s in STATES if _RANK[s] < _RANK[state] and _RANK[s] >= _RANK["sent"]]
        if not outgoing:
            lower = [s for s in lower if s == "delivered"]
        marks = ", ".join("?" for _ in lower)
        with self._transaction():
            target = self._row(
                "SELECT id, stamp FROM messages WHERE peer = ? AND direction = ? AND message_id = ?"
                " AND replaces IS NULL ORDER BY id DESC LIMIT 1",
                (str(peer.bare), direction, message_id),
            )
            if target is None or not lower:
                return []
            row_id, stamp = target
            scope, bounds = ("(stamp < ? OR (stamp = ? AND id <= ?))", (stamp, stamp, row_id)) if earlier else (
                "id = ?", (row_id,))
            rows = self._rows(
                f"SELECT id, message_id FROM messages WHERE peer = ? AND direction = ? AND replaces IS NULL"
                f" AND state IN ({marks}) AND {scope} ORDER BY stamp, id",
                (str(peer.bare), direction, *lower, *bounds),
            )
            for moved, _ in rows:
                self._db.execute("UPDATE messages SET state = ? WHERE id = ?", (state, moved))
                self._db.execute("DELETE FROM outbox WHERE message = ?", (moved,))
            ids = [id for _, id in rows if id is not None]
            if ids and answer is not None:
                self._answer(row_id, answer)
        return ids

    def latest_markable(self, peer: JID, message_id: str) -> str | None:
        """The id of the last markable message from ``peer`` up to ``message_id`` (XEP-0333)."""
        target = self._row(
            "SELECT id, stamp FROM messages WHERE peer = ? AND direction = 'in' AND message_id = ?"
            " AND replaces IS NULL ORDER BY id DESC LIMIT 1",
            (str(peer.bare), message_id),
        )
        if target is None:
            return None
        row = self._row(
            "SELECT message_id FROM messages WHERE peer = ? AND direction = 'in' AND markable = 1"
            " AND replaces IS NULL AND message_id IS NOT NULL AND (stamp < ? OR (stamp = ? AND id <= ?))"
            " ORDER BY stamp DESC, id DESC LIMIT 1",
            (str(peer.bare), target[1], target[1], target[0]),
        )
        return row[0] if row is not None else None

    def history(self, peer: JID, limit: int | None = None) -> list[StoredMessage]:
        """The conversation with ``peer``, oldest first; only the last ``limit`` messages if given."""
        rows = self._rows(
            f"SELECT {_COLUMNS} FROM messages WHERE peer = ? AND replaces IS NULL ORDER BY stamp DESC, id DESC LIMIT ?",
            (str(peer.bare), -1 if limit is None else limit),
        )
        return [_message(row) for row in reversed(rows)]

    def conversations(self) -> list[Conversation]:
        """Every conversation with a message stored, the latest first: its last message and how
        many of the contact's messages are not read yet."""
        # SQLite takes the bare columns of a MAX() aggregate from the row that holds the maximum.
        rows = self._rows(
            "SELECT peer, MAX(stamp), body, direction, SUM(direction = 'in' AND state = 'delivered')"
            " FROM messages WHERE replaces IS NULL GROUP BY peer ORDER BY MAX(stamp) DESC, peer"
        )
        return [Conversation(JID.parse(peer), _parse_stamp(stamp), body, direction, unread)
                for peer, stamp, body, direction, unread in rows]

    # The archive catch-up -----------------------------------------------------------------------

    def archive_position(self) -> str | None:
        """The id of the last archived message (XEP-0313) a catch-up went through, if any."""
        return self.setting("archive")

    def save_archive_position(self, id: str) -> None:
        self.save_setting("archive", id)

    # The roster cache ---------------------------------------------------------------------------

    def save_roster(self, contacts: Iterable[Contact]) -> None:
        """Replace the cached roster with the one the server sent."""
        with self._transaction():
            self._db.execute("DELETE FROM contacts")
            for contact in contacts:
                self._put_contact(contact)

    def update_contact(self, contact: Contact) -> None:
        """Apply a roster push: a changed item, or a removed one (subscription "remove")."""
        with self._transaction():
            if contact.subscription == "remove":
                self._db.execute("DELETE FROM contacts WHERE jid = ?", (str(contact.jid),))
            else:
                self._put_contact(contact)

    def _put_contact(self, contact: Contact) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO contacts (jid, name, subscription, pending, approved, groups)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (str(contact.jid), contact.name, contact.subscription, int(contact.pending), int(contact.approved),
             json.dumps(list(contact.groups))),
        )

    def contacts(self) -> list[Contact]:
        """The cached roster, by JID."""
        rows = self._rows(
            "SELECT jid, name, subscription, pending, approved, groups FROM contacts ORDER BY jid"
        )
        return [Contact(JID.parse(jid), name, subscription, bool(pending), bool(approved), tuple(json.loads(groups)))
                for jid, name, subscription, pending, approved, groups in rows]

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on an exception; SQLite errors become StoreError."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise StoreError(f"cannot write to the local store: {err}") from None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        if kind is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.Error as err:
                exc = err
        self._db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"cannot write to the local store: {exc}") from None


_COLUMNS = ("peer, direction, body, stamp, state, origin_id, stanza_id, encrypted, error, error_text, message_id,"
            " edited, nick, sender")


def _message(row: tuple[str, str, str, str, str, str | None, str | None, int, str | None, str | None,
                        str | None, str | None, str | None, str | None]) -> StoredMessage:
    (peer, direction, body, stamp, state, origin_id, stanza_id, encrypted, error, error_text, message_id, edited,
     nick, sender) = row
    return StoredMessage(JID.parse(peer), direction, body, _parse_stamp(stamp), state, origin_id, stanza_id,
                         bool(encrypted), error, error_text, message_id,
                         _parse_stamp(edited) if edited is not None else None, nick,
                         JID.parse(sender) if sender is not None else None)


# The password ---------------------------------------------------------------------------------


def _trusted_keyring() -> bool:
    """Whether the keyring is a real secret store: the system's (priority 1 and up, as keyring
    rates them) or one the user named in PYTHON_KEYRING_BACKEND. Fallbacks that keyring would pick
    on its own, such as a plaintext file, are not better than our 0600 file."""
    import keyring

    if os.environ.get("PYTHON_KEYRING_BACKEND"):
        return True
    priority: float = getattr(keyring.get_keyring(), "priority", 0)
    return priority >= 1


def save_password(directory: Path, account: JID, password: str) -> str:
    """Keep the password in the system keyring, or else in ``directory``'s 0600 file; where it went
    ("the system keyring" or the file's path) is returned."""
    return save_secret(directory, account, PASSWORD_FILE, password)


def load_password(directory: Path, account: JID) -> str | None:
    """The password kept by :func:`save_password`, or None."""
    return load_secret(directory, account, PASSWORD_FILE)


def _service(name: str) -> str:
    return KEYRING_SERVICE if name == PASSWORD_FILE else f"{KEYRING_SERVICE}-{name}"


def save_secret(directory: Path, account: JID, name: str, value: str) -> str:
    """Keep a secret (the password, a login token) as the password is kept; where it went is returned."""
    import keyring
    import keyring.errors

    try:
        if not _trusted_keyring():
            raise keyring.errors.NoKeyringError("only a fallback keyring is available")
        keyring.set_password(_service(name), str(account.bare), value)
    except (keyring.errors.KeyringError, RuntimeError, OSError) as err:
        log.info("no usable keyring (%s); keeping the %s in a file", err, name)
    else:
        (directory / name).unlink(missing_ok=True)
        return "the system keyring"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / name
    partial = directory / f".{name}.new"
    partial.unlink(missing_ok=True)
    # O_EXCL: never write into a file someone else made, whatever its mode.
    fd = os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(value)
    partial.replace(path)
    return str(path)


def load_secret(directory: Path, account: JID, name: str) -> str | None:
    """A secret kept by :func:`save_secret`, or None."""
    import keyring
    import keyring.errors

    try:
        found = keyring.get_password(_service(name), str(account.bare)) if _trusted_keyring() else None
    except (keyring.errors.KeyringError, RuntimeError, OSError):
        found = None
    if found is not None:
        return found
    try:
        return (directory / name).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def forget_secret(directory: Path, account: JID, name: str) -> None:
    """Remove a secret kept by :func:`save_secret`, wherever it is."""
    import keyring
    import keyring.errors

    with contextlib.suppress(keyring.errors.KeyringError, RuntimeError, OSError):
        if _trusted_keyring():
            keyring.delete_password(_service(name), str(account.bare))
    (directory / name).unlink(missing_ok=True)
