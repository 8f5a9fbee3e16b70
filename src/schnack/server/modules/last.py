"""XEP-0012: Last Activity of the server's accounts (§5) and of the server itself (§6).

- A query to an account's bare JID (§5, Offline User Query) is answered by the server on the
  account's behalf, to the account itself and to the contacts it lets see its presence (a
  subscription ``from`` or ``both``, RFC 6121 §2.1.2.5); anyone else gets forbidden (§4). While
  the account has an available resource on any node, the answer is ``seconds='0'``; else the
  seconds since its last session ended, with the status of the unavailable presence that session
  sent, if it sent one. An account that does not exist is service-unavailable (RFC 6121 §8.5.1,
  as ping and vCard answer); one whose session never ended since the server began keeping this is
  item-not-found.
- A query to a domain (§6) gets the seconds since this node started.
- A query to a full JID goes to that client (§4), which answers for itself.

The end of an account's last session is stored with the account (key ``last`` of the shared
key-value store): it survives restarts, every node of a cluster reads the same, and it goes with
the account when that is deleted. It is written once per session end, in the background (a
session's end and start are on the way of a login that replaces it), and only when no other
session of the account is left here or in the cluster directory; the session's own node has
taken it out of the directory before (``session-closed`` runs the cluster's handler first), so
of two last sessions ending at once on two nodes at least one writes. The node that reaps a dead
node writes it for the accounts whose sessions were all there. A session's start is written too
(key ``last-began``), once per bind, in the background too: a session that a killed server (or a whole cluster that went
down at once) ended writes no end, and the account then counts as active since that session
began, not since an end weeks before it, which would make a phone in use until the crash look
given up (docs/phone.md). Nothing is written for a message or for a presence: the status of an
unavailable presence stays with the session in memory until it ends.

When it first starts, the module stores the time it began to record this (key ``last-since`` of
each domain, never changed after): an account with no recorded end has been idle at most since
then, or since it was created if that is later (:meth:`LastActivity.idle_since`), so accounts
used before the server recorded anything do not look idle since their creation. The phone
module reads this to tell a number that was given to someone else (docs/phone.md).
"""

from __future__ import annotations

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
from ..module import Module
from ..storage import AccountGone, StorageError
from .roster import has_from

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from ...xmpp.stanza import Stanza
    from ..sessions import Session
    from ..storage import Account

log = logging.getLogger(__name__)

# kv (host, username, STORE): JSON {"ended": time, "status": text or null} of the last session's end.
STORE = "last"
# kv (host, username, BEGAN): when the account's latest session was bound (time.time(), as text).
BEGAN = "last-began"
# kv (host, "", SINCE): when the server began to record the ends of sessions on the domain.
SINCE = "last-since"
QUERY = qname(ns.LAST, "query")


@dataclass
class _Unavailable:
    """The status of the session's latest presence if that was unavailable (None: none, or available since)."""

    status: str | None = None


@dataclass(frozen=True)
class Ended:
    """When an account's last session ended (seconds since the epoch), and its unavailable status."""

    when: float
    status: str | None = None


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
        self.iq("host", QUERY, get=self.uptime)
        for target in ("self", "bare"):
            self.iq(target, QUERY, get=self.account_activity)
        # Before the presence module takes it (HANDLED), to see the status of unavailable presence.
        self.route("pre-presence/self", self.presence_sent, priority=10)
        self.hook("session-bound", self.session_bound)
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
        """The starts and ends still being recorded are stored before storage closes."""
        await self.settled()

    async def settled(self) -> None:
        """Return once the starts and ends of sessions that went so far are recorded."""
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
        if await self.available(owner):
            return stanza.result(answer(0))
        ended = await self.ended(owner)
        if ended is None:
            raise StanzaError("item-not-found", "no end of a session of this account is recorded")
        return stanza.result(answer(time.time() - ended.when, ended.status))

    # --- what is kept ----------------------------------------------------------------------

    async def available(self, account: JID) -> bool:
        """Whether ``account`` has an available resource on any node."""
        if any(s.available and not s.closed for s in self.server.sessions.resources(account)):
            return True
        return bool(await self.server.cluster.presence.available(account))

    async def connected(self, account: JID) -> bool:
        """Whether ``account`` has a session, available or not, on any node."""
        return self.server.sessions.is_online(account) or bool(await self.server.cluster.remote(account))

    async def ended(self, account: JID) -> Ended | None:
        """The recorded end of the account's last session, if any. With no session of the
        account connected, a session that began after it ended unrecorded (its server was
        killed): then its start, when the account was in use at least."""
        assert account.local is not None
        kv = self.server.storage.kv
        raw = await kv.get(account.domain, account.local, STORE)
        began = await kv.get(account.domain, account.local, BEGAN)
        ended = None
        if raw is not None:
            stored = json.loads(raw)
            ended = Ended(float(stored["ended"]), stored.get("status"))
        if began is not None and (ended is None or float(began) > ended.when) and not await self.connected(account):
            return Ended(float(began))
        return ended

    async def idle_since(self, account: Account) -> float:
        """Since when ``account`` has been idle, given that no session of it is connected: the end
        of its last session, else the later of its creation and the start of the records."""
        ended = await self.ended(JID(account.username, account.host))
        if ended is not None:
            return ended.when
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

    async def _record_end(self, account: JID, status: str | None) -> None:
        await self._record(account, STORE, json.dumps({"ended": time.time(), "status": status}).encode())

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
            self._writes.spawn(self._record(account, BEGAN, repr(time.time()).encode()))

    async def session_closed(self, session: Session) -> None:
        """Record the end when this was the account's last session anywhere. In the background:
        a session replaced by a new one on its resource ends before that one is reachable, which
        waits for this event; by the time the check runs the new one counts, and no end is
        recorded for an account that never went away."""
        account = session.jid.bare
        if account.domain in self.server.hosts:
            self._writes.spawn(self._closed(account, session.slot(_Unavailable).status))

    async def _closed(self, account: JID, status: str | None) -> None:
        if not await self.connected(account):
            await self._record_end(account, status)

    async def reaped(self, _node: str, dropped: dict[str, str]) -> None:
        """A dead node's sessions are gone: record the end of the accounts that have none left."""
        accounts = set()
        for full in dropped:
            try:
                accounts.add(JID.parse(full).bare)
            except JIDError:
                continue
        for account in accounts:
            if account.domain in self.server.hosts and account.local and not await self.connected(account):
                await self._record_end(account, None)
