"""XEP-0012: Last Activity of the server's accounts (§5) and of the server itself (§6).

- A query to an account's bare JID (§5, Offline User Query) is answered by the server on the
  account's behalf, to the account itself and to the contacts it lets see its presence (a
  subscription ``from`` or ``both``, RFC 6121 §2.1.2.5); anyone else gets forbidden (§4). While
  the account has an available resource on any node with its connection, the answer is
  ``seconds='0'``; else the seconds since its last session ended, with the status of the
  unavailable presence that session sent, if it sent one. A session that hibernates (XEP-0198 §5:
  its connection went, it waits to be resumed) is not online: when only such sessions are left,
  the answer counts from when the connection of the latest of them went, or from a later recorded
  end; one that resumes is online again. An account that does not exist is service-unavailable
  (RFC 6121 §8.5.1, as ping and vCard answer); one whose session never ended since the server
  began keeping this is item-not-found.
- A query to a domain (§6) gets the seconds since this node started.
- A query to a full JID goes to that client (§4), which answers for itself.

The end of an account's last session is stored with the account (key ``last`` of the shared
key-value store): it survives restarts, every node of a cluster reads the same, and it goes with
the account when that is deleted. It is written once per session end, in the background (a
session's end and start are on the way of a login that replaces it), and only when no other
session of the account with its connection is left here or in the cluster directory; the
session's own node has taken it out of the directory before (``session-closed`` runs the
cluster's handler first), so of two last sessions ending at once on two nodes at least one
writes. A session that ends from hibernation ended, as its user sees it, when its connection
went; when the server let it go is kept beside that (``closed``), as the account was held until
then. A recorded end never moves back: a write keeps the later of what it finds and what it
brings, each node under the account's lock in the cluster. A write that storage refuses (a
database failing over, a connection that broke, SQLite locked by another process) is made again in the background, up to
``END_ATTEMPTS`` times over some 15 seconds, each failure a warning in the log and the last an
error: until it is written the account looks idle since its end before. A server that stops
makes the attempts left at once. Whether and since when a session
hibernates is in the cluster directory (cluster/directory.py), so every node answers alike. The
node that reaps a dead node writes it for the accounts whose sessions with their connection were
all there, as gone when each connection went if it hibernated. A session's start is written too
(key ``last-began``), once per bind, in the background too: a session that a killed server (or a whole cluster that went
down at once) ended writes no end, and the account then counts as active since that session
began, not since an end weeks before it, which would make a phone in use until the crash look
given up (docs/phone.md). A resumption (XEP-0198 §5) is written the same way, as a phone kept
alive by resumptions may not bind for weeks; at most once per ``BEGAN_EVERY`` an account on each
node, counting the bind, so that resuming stays cheap. Nothing is written for a message or for a presence: the status of an
unavailable presence stays with the session in memory until it ends.

When it first starts, the module stores the time it began to record this (key ``last-since`` of
each domain, never changed after): an account with no recorded end has been idle at most since
then, or since it was created if that is later (:meth:`LastActivity.idle_since`), so accounts
used before the server recorded anything do not look idle since their creation. The phone
module reads this to tell a number that was given to someone else (docs/phone.md); for it an
account is idle from when the server let its last session go, the end of a hibernation included,
and a hibernating session counts as connected (:meth:`LastActivity.connected`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID, JIDError
from ...xmpp.xml import element, qname
from ..background import Background
from ..cluster.bus import Entry
from ..cluster.directory import read
from ..locks import AccountLocks
from ..module import Module
from ..storage import AccountGone, StorageError
from .roster import has_from
from .sm import RESUMED, SmState

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from ...xmpp.stanza import Stanza
    from ..sessions import Session
    from ..storage import Account

log = logging.getLogger(__name__)

# kv (host, username, STORE): JSON {"ended": time, "status": text or null, "closed": time} of the
# last session's end; "closed" only when later than "ended" (Ended).
STORE = "last"
# kv (host, username, BEGAN): when a session of the account was last bound or resumed (time.time(),
# as text).
BEGAN = "last-began"
# Seconds after BEGAN was written for an account (here) before a resumption writes it again: a
# phone resumes every few minutes, and a number is taken for given up after weeks (docs/phone.md).
BEGAN_EVERY = 600.0
# kv (host, "", SINCE): when the server began to record the ends of sessions on the domain.
SINCE = "last-since"
# Attempts at writing a session's end that storage refuses, and the wait before the second (each
# later wait doubles): 15 s in all, for a database failing over or a connection that broke.
END_ATTEMPTS = 5
END_RETRY_AFTER = 1.0
QUERY = qname(ns.LAST, "query")


@dataclass
class _Unavailable:
    """The status of the session's latest presence if that was unavailable (None: none, or available since)."""

    status: str | None = None


@dataclass(frozen=True)
class Ended:
    """When an account's last session ended as its user sees it (seconds since the epoch; for one
    that hibernated, when its connection went, XEP-0198 §5), its unavailable status, and when the
    server let it go if that was later (the end of its hibernation)."""

    when: float
    status: str | None = None
    closed: float | None = None

    @property
    def held_until(self) -> float:
        """Until when the account had a session, hibernating or not."""
        return self.when if self.closed is None else max(self.when, self.closed)

    def encode(self) -> bytes:
        """As stored under STORE."""
        stored: dict[str, object] = {"ended": self.when, "status": self.status}
        if self.held_until > self.when:
            stored["closed"] = self.held_until
        return json.dumps(stored).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Ended:
        """As read from STORE (one written before ``closed`` was kept has none)."""
        stored = json.loads(raw)
        closed = stored.get("closed")
        return cls(float(stored["ended"]), stored.get("status"), None if closed is None else float(closed))

    def later(self, other: Ended) -> Ended:
        """The later of two ends (with its status), held until the later of the two."""
        last = other if other.when >= self.when else self
        return Ended(last.when, last.status, max(self.held_until, other.held_until))


def answer(seconds: float, status: str | None = None) -> Element:
    """The ``<query/>`` of a result (XEP-0012 §2): whole seconds, and the status as its text."""
    return element(QUERY, {"seconds": str(max(0, math.floor(seconds)))}, status or None)


class LastActivity(Module[Any]):
    """Answers jabber:iq:last for accounts (XEP-0012 §5) and domains (§6); records sessions' ends."""

    name = "last"
    features = (ns.LAST,)
    account_features = (ns.LAST,)
    # When this node started (time.monotonic()), for its uptime.
    started: float
    # Per domain, when the ends of sessions began to be recorded (SINCE).
    since: dict[str, float]

    def setup(self) -> None:
        self._writes = Background(log, "recording the start or the end of a session failed")
        # A recorded end is read, merged and written again: one node at a time per account.
        self._locks = AccountLocks(self.server.cluster.bus, "last")
        # Set when the server stops: the writes still tried again are made without waiting.
        self._stopping = asyncio.Event()
        # When this node last wrote BEGAN for each account (time.monotonic()), oldest first; only
        # those of the last BEGAN_EVERY are kept.
        self._began: dict[JID, float] = {}
        self.iq("host", QUERY, get=self.uptime)
        for target in ("self", "bare"):
            self.iq(target, QUERY, get=self.account_activity)
        # Before the presence module takes it (HANDLED), to see the status of unavailable presence.
        self.route("pre-presence/self", self.presence_sent, priority=10)
        self.hook("session-bound", self.session_bound)
        self.hook(RESUMED, self.session_resumed)
        self.hook("session-closed", self.session_closed)
        self.server.cluster.bus.on_reaped(self.reaped)

    async def start(self) -> None:
        self.started = time.monotonic()
        kv = self.server.storage.kv
        self.since = {}
        for host in sorted(self.server.hosts):
            # The first node ever to start stores it; every later start reads the same.
            self.since[host] = float(await kv.set_default(host, "", SINCE, repr(time.time()).encode()))

    async def stop(self) -> None:
        """The starts and ends still being recorded are stored before storage closes; an end
        that storage refused is tried again at once, the attempts left without a wait."""
        self._stopping.set()
        await self.settled()

    async def settled(self) -> None:
        """Return once the starts and ends of sessions that went so far are recorded (or their
        attempts ran out)."""
        await self._writes.wait()

    # --- answers ---------------------------------------------------------------------------

    async def uptime(self, stanza: Stanza, _origin: Session | None) -> Element:
        """§6: the seconds since this node started."""
        return stanza.result(answer(time.monotonic() - self.started))

    async def account_activity(self, stanza: Stanza, _origin: Session | None) -> Element:
        """§5: the account's last activity, for whom it lets see its presence (§4)."""
        asker = stanza.from_
        assert asker is not None
        # Without 'to' a client asks about its own account (RFC 6120 §10.3.3).
        owner = stanza.to if stanza.to is not None else asker.bare
        assert owner.local is not None
        if await self.server.storage.accounts.get(owner.domain, owner.local) is None:
            raise StanzaError("service-unavailable")
        if asker.bare != owner:
            item = await self.server.storage.roster.get_item(owner.domain, owner.local, str(asker.bare))
            if item is None or not has_from(item.subscription):
                raise StanzaError("forbidden", "only the contacts who see this account's presence may ask")
        online, went = await self.available(owner)
        if online:
            return stanza.result(answer(0))
        ended = await self.ended(owner)
        if went is not None and (ended is None or went > ended.when):
            return stanza.result(answer(time.time() - went))
        if ended is None:
            raise StanzaError("item-not-found", "no end of a session of this account is recorded")
        return stanza.result(answer(time.time() - ended.when, ended.status))

    # --- what is kept ----------------------------------------------------------------------

    async def available(self, account: JID) -> tuple[bool, float | None]:
        """Whether ``account`` has an available resource with its connection on any node; if
        not, since when the connection of the latest of its available resources that hibernate
        (XEP-0198 §5) has been gone, if any do."""
        went: list[float] = []
        for session in self.server.sessions.resources(account):
            if session.available and not session.closed:
                since = session.slot(SmState).hibernating_since
                if since is None:
                    return True, None
                went.append(since)
        for info in await self.server.cluster.remote(account):
            if info.available:
                if info.hibernating_since is None:
                    return True, None
                went.append(info.hibernating_since)
        return False, max(went, default=None)

    async def connected(self, account: JID) -> bool:
        """Whether ``account`` has a session, available or not, hibernating or not, on any node."""
        return self.server.sessions.is_online(account) or bool(await self.server.cluster.remote(account))

    async def live(self, account: JID) -> bool:
        """Whether ``account`` has a session with its connection (one that does not hibernate), on any node."""
        if any(not s.closed and s.slot(SmState).hibernating_since is None
               for s in self.server.sessions.resources(account)):
            return True
        return any(info.hibernating_since is None for info in await self.server.cluster.remote(account))

    async def ended(self, account: JID) -> Ended | None:
        """The recorded end of the account's last session, if any. With no session of the
        account connected, a session that began after it ended unrecorded (its server was
        killed): then its start, when the account was in use at least."""
        assert account.local is not None
        kv = self.server.storage.kv
        raw = await kv.get(account.domain, account.local, STORE)
        began = await kv.get(account.domain, account.local, BEGAN)
        ended = None if raw is None else Ended.decode(raw)
        if began is not None and (ended is None or float(began) > ended.when) and not await self.connected(account):
            return Ended(float(began)) if ended is None else ended.later(Ended(float(began)))
        return ended

    async def idle_since(self, account: Account) -> float:
        """Since when ``account`` has been idle, given that no session of it is connected: since
        the server let its last session go, else the later of its creation and the start of the
        records."""
        ended = await self.ended(JID(account.username, account.host))
        if ended is not None:
            return ended.held_until
        return max(account.created, self.since[account.host])

    async def _record(self, account: JID, store: str, value: bytes) -> None:
        assert account.local is not None
        try:
            await self.server.storage.kv.set(account.domain, account.local, store, value)
        except AccountGone:
            pass  # a deleted account's sessions end after it is gone: nothing is kept for it
        except StorageError as err:
            # The session goes on or ends regardless; the account then looks idle since earlier.
            log.error("recording the %s of a session of %s failed: %s", store, account, err)

    async def _record_end(self, account: JID, end: Ended) -> None:
        """Store ``end``, or keep a later one already stored; when storage refuses, again a
        little later, up to END_ATTEMPTS times: until it is written the account looks idle
        since its end before."""
        wait = END_RETRY_AFTER
        for attempt in range(1, END_ATTEMPTS + 1):
            try:
                await self._merge_end(account, end)
            except AccountGone:
                return  # a deleted account's sessions end after it is gone: nothing is kept for it
            except StorageError as err:
                if attempt == END_ATTEMPTS:
                    log.error("recording the end of a session of %s failed %d times, given up; it looks idle "
                              "since its end before: %s", account, attempt, err)
                    return
                log.warning("recording the end of a session of %s failed (attempt %d of %d), again in %g s: %s",
                            account, attempt, END_ATTEMPTS, wait, err)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), wait)
                wait *= 2
            else:
                if attempt > 1:
                    log.info("recorded the end of a session of %s at attempt %d", account, attempt)
                return

    async def _merge_end(self, account: JID, end: Ended) -> None:
        assert account.local is not None
        kv = self.server.storage.kv
        async with self._locks.hold(account):
            raw = await kv.get(account.domain, account.local, STORE)
            if raw is not None:
                end = Ended.decode(raw).later(end)
            await kv.set(account.domain, account.local, STORE, end.encode())

    # --- events ----------------------------------------------------------------------------

    async def presence_sent(self, stanza: Stanza, origin: Session | None) -> None:
        """Keep the status of an unavailable presence the session sends for the end of the session."""
        assert origin is not None
        if stanza.type == "unavailable":
            origin.slot(_Unavailable).status = stanza.el.findtext(qname(stanza.namespace, "status"))
        elif stanza.type is None:
            origin.slot(_Unavailable).status = None

    async def session_bound(self, session: Session) -> None:
        """Record the start of the session, which counts as use if its end is never recorded; in
        the background, as the session becomes reachable only once this event is handled."""
        account = session.jid.bare
        if account.domain in self.server.hosts:
            self._in_use(account)

    async def session_resumed(self, session: Session) -> None:
        """XEP-0198 §5: record the use of a resumed session as that of a bound one, unless this
        node did so for the account in the last BEGAN_EVERY seconds."""
        account = session.jid.bare
        if account.domain in self.server.hosts and not self._in_use_lately(account):
            self._in_use(account)

    def _in_use(self, account: JID) -> None:
        """Write BEGAN now, in the background."""
        self._in_use_lately(account)
        self._began.pop(account, None)
        self._began[account] = time.monotonic()
        self._writes.spawn(self._record(account, BEGAN, repr(time.time()).encode()))

    def _in_use_lately(self, account: JID) -> bool:
        """Whether this node wrote BEGAN for ``account`` in the last BEGAN_EVERY seconds; those
        written longer ago are forgotten."""
        since = time.monotonic() - BEGAN_EVERY
        while self._began and next(iter(self._began.values())) < since:
            del self._began[next(iter(self._began))]
        return account in self._began

    async def session_closed(self, session: Session) -> None:
        """Record the end when this was the account's last session with its connection anywhere
        (when that went, for one that ended from hibernation, XEP-0198 §5). In the background:
        a session replaced by a new one on its resource ends before that one is reachable, which
        waits for this event; by the time the check runs the new one counts, and no end is
        recorded for an account that never went away."""
        account = session.jid.bare
        if account.domain in self.server.hosts:
            went = session.slot(SmState).hibernating_since
            self._writes.spawn(self._closed(account, session.slot(_Unavailable).status, went))

    async def _closed(self, account: JID, status: str | None, went: float | None) -> None:
        """``went``: when the session's connection went, if it ended from hibernation."""
        now = time.time()
        await self._ended_if_gone(account, Ended(now, status) if went is None else Ended(went, status, now))

    async def _ended_if_gone(self, account: JID, end: Ended) -> None:
        if not await self.live(account):
            await self._record_end(account, end)

    async def reaped(self, node: str, dropped: dict[str, str]) -> None:
        """A dead node's sessions are gone: record the end of the accounts that have none with its
        connection left, each gone when the latest of its connections there went."""
        now = time.time()
        went: dict[JID, float] = {}
        for full, entry in dropped.items():
            try:
                account = JID.parse(full).bare
            except JIDError:
                continue
            since = read(full, Entry(node, entry)).hibernating_since
            went[account] = max(went.get(account, 0.0), now if since is None else since)
        for account, when in went.items():
            if account.domain in self.server.hosts and account.local:
                self._writes.spawn(self._ended_if_gone(account, Ended(when, None, now)))
