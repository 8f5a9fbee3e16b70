"""XEP-0313: Message Archive Management (``urn:xmpp:mam:2`` and ``#extended``), with XEP-0359
stanza-ids, XEP-0059 paging and XEP-0441 preferences.

**Archiving.** Every account has one archive (archive store ``mam``). A message a local client sends
is archived for its sender on ``pre-message/{bare,full,remote}``; a message for a local account is
archived for its recipient on ``message/{bare,full,self}``, before delivery (which runs at -100) and
before offline storage, so that a second device finds what the first one got or what waited offline.
Each copy gets its id at once and is handed to the router as a deferred write: the message goes on
(its carbons and its delivery carry the ids) while both copies are committed together, one commit
per message, and it counts as handled (acknowledged to its sender, XEP-0198) only once they are. So
a message is durable before its sender is told it arrived; should the server fail between delivery
and commit, the sender, not told, sends it again, and it arrives twice rather than never (and a
failed commit is a 'wait' error for the sender). A read of the archive waits for the appends issued
before it, so a client that queries right after a message arrived finds it. A message between two
resources of one account is archived once, as it arrives (§6.1.1). Both routes run at priority 50:
after modules that refuse a message (a refused message is not archived, §6), before those that copy
it to other resources.

What is archived (§6.1.1, XEP-0334 §4): chat and normal messages that carry a body, an end-to-end
encrypted payload (OMEMO, OpenPGP), a chat marker (XEP-0333), a call event (XEP-0353), a group
invitation (XEP-0249), a reaction (XEP-0444) or a retraction (XEP-0424); a ``<store/>`` hint
forces any chat or normal message in, ``<no-store/>`` and ``<no-permanent-store/>`` keep one out.
Errors, headlines, groupchat messages and messages with nothing but a chat state or a delivery
receipt are not archived. (Offline storage keeps more, receipts among them: see
``offline.worth_storing``; what waits for an absent device is not what every device reads back.)
The account's preferences (XEP-0441) decide per contact; those in use are kept in memory, and in
a cluster a node that changes them, or deletes the account, tells the others
(``ClusterBus.announce``), which drop their copy.

**Stanza-ids (§3.5, XEP-0359).** A message for a local account first loses every stanza-id
that claims to be by that account (only the server assigns those); once archived it gets
``<stanza-id by='account' id='archive id'/>``, which the recipient's devices (and offline
storage) receive. A message a local client sends carries the sender's archive id
(``<stanza-id by='sender'/>``) only while it passes the sender's own handlers: the carbons module
copies it into the ``<sent/>`` copies for the sender's other devices (priority -100), so that
they know the message by the id they later find in the archive; a last handler (priority -1000)
then takes it off, since §3.5 forbids showing it to the contact.

**Queries (§4).** An IQ set with ``<query/>`` to the account's own bare JID (or without 'to'):
the form filters ``with``, ``start``, ``end``, ``before-id``, ``after-id`` and ``ids`` (at
most ``max_page_size`` of them, so that all a query finds fit one page; more get
policy-violation); RSM ``max`` (capped at ``max_page_size``), ``after``, ``before`` (empty for
the last page) and ``<flip-page/>``. ``start`` and ``end`` take in the messages whose stamp, as results and
metadata show it (to the microsecond, the precision a message's time is kept at), is within
them. The results go to the querying resource as messages, then the IQ result with ``<fin/>``
says whether the page completes the result set. A ``with`` full JID matches the messages to or
from that very JID. The archive keeps each message under the contact's bare JID and, in a column
of its own, the resource of the contact's address as the message has it (none for a bare JID),
so a contact's full JID finds its messages by an index, exactly, however large the archive.
Messages archived before resources were kept (storage migration SQLite 0007, PostgreSQL 0008)
have none: such a query also reads those, in order among the others, and parses each, and so
does a query with one of the account's own full JIDs (the account's side of a message is not
kept apart) for the whole archive; at most ``SCAN_MOST`` messages are parsed a query: what it
found by then is the page, incomplete, to page on from; nothing found is policy-violation (type
modify: the same query would meet it again), asking the client to narrow the query by time or
to ask with the bare JID. The number of matching messages costs a read of all of them, so only a
request for the count alone (RSM ``max`` 0) gets it (and of the messages parsed, only within
``SCAN_MOST``). An IQ get returns the form (§4.1.5); ``<metadata/>`` names the first and last
message (§5); ``<prefs/>`` reads and sets the preferences. Another account's archive is
forbidden (§8.1).

**Retention.** With ``retention_days`` set, messages older than that are deleted every hour
(§3.2: always the oldest, so the archive has no holes). An account's archive and preferences go
with the account (storage deletes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, TypeVar
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError, StreamError
from ...xmpp.jid import JID, JIDError
from ...xmpp.parser import parse_frame
from ...xmpp.payloads.forward import Forwarded
from ...xmpp.payloads.mam import (
    EXTENDED,
    METADATA,
    NS,
    POLICIES,
    PREFS,
    QUERY,
    Edge,
    Fin,
    MamError,
    Metadata,
    Prefs,
    Query,
    Result,
    query_form,
)  # fmt: skip
from ...xmpp.payloads.rsm import ResultSet
from ...xmpp.payloads.sid import stanza_id, strip_stanza_ids
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname, serialize, split
from ..cluster.bus import announced
from ..config import bounded
from ..module import Module
from ..storage import ArchivedItem, ArchivePage, ItemNotFound, new_item_id
from ..storage.base import ArchiveStore
from .e2e import ENCRYPTED
from .message import message_type

if TYPE_CHECKING:
    from ..sessions import Session

log = logging.getLogger(__name__)
T = TypeVar("T")

STORE = "mam"
PREFS_STORE = "mam-prefs"
# A stored message is at most the largest stanza the configuration allows, plus what was added.
_MAX_STORED = 16 * 1024 * 1024 + 4096
_PURGE_PERIOD = 3600.0
# Every message consults the preferences of its sender and of its recipient, so they are kept
# for the accounts that were active lately.
_PREFS_KEPT = 10_000
# Messages read at a time while looking for those of one resource (a 'with' full JID) that the
# archive does not know by their resource.
_SCAN_BATCH = 500
# The most messages parsed for one query with a 'with' full JID (§4.1.1) to find those of that
# resource, of those archived before resources were kept or, for one of the account's own
# resources, of all: a third of a second of CPU at most (1 KB messages, SQLite), and no more as
# the archive grows (docs/benchmarks.md, "The message archive at a million messages").
SCAN_MOST = 10_000
_HINTS = "urn:xmpp:hints"
# XEP-0334 §4: the hints that keep a message out of every archive.
NO_STORE: Final = frozenset({qname(_HINTS, "no-store"), qname(_HINTS, "no-permanent-store")})
_STORE_HINT: Final = qname(_HINTS, "store")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Namespaces whose elements make a message worth keeping even without a body.
_CONTENT_NAMESPACES: Final = frozenset({
    "urn:xmpp:chat-markers:0",  # XEP-0333: read state, synchronised across devices
    "urn:xmpp:jingle-message:0",  # XEP-0353: the call log
    "urn:xmpp:jingle-message:1",
    "jabber:x:conference",  # XEP-0249: direct group invitations
    "urn:xmpp:reactions:0",  # XEP-0444: reactions, which the other devices show too
    "urn:xmpp:message-retract:1",  # XEP-0424: a retraction, which they must apply too
})  # fmt: skip


@dataclass(frozen=True)
class MamOptions:
    """Archiving defaults and limits."""

    default_policy: str = bounded(
        "always", choices=POLICIES, help="what is archived for an account that set no preferences (XEP-0441)"
    )
    max_page_size: int = bounded(250, min=1, max=10_000, help="most messages one query returns")
    retention_days: int = bounded(0, min=0, help="delete archived messages older than this; 0 keeps them")


def worth_archiving(stanza: Stanza) -> bool:
    """§6.1.1 and XEP-0334 §4: whether a message belongs in a user archive (see the module docstring)."""
    if message_type(stanza) not in ("chat", "normal"):
        return False
    children = [child.tag for child in stanza.el]
    if any(tag in NO_STORE for tag in children):
        return False
    if _STORE_HINT in children:
        return True
    body = qname(stanza.namespace, "body")
    return any(tag == body or tag in ENCRYPTED or split(tag)[0] in _CONTENT_NAMESPACES for tag in children)


class _RecentPrefs:
    """Preferences in use, of at most _PREFS_KEPT accounts, least recently used first out.

    A change made through this node applies at once; another node of a cluster announces its
    changes (``ClusterBus.announce``), and those it may have missed drop them all.
    """

    def __init__(self) -> None:
        self._entries: OrderedDict[JID, Prefs] = OrderedDict()
        # Counts changes, so that preferences read from storage while one was made are not kept.
        self.changes = 0

    def get(self, owner: JID) -> Prefs | None:
        prefs = self._entries.get(owner)
        if prefs is not None:
            self._entries.move_to_end(owner)
        return prefs

    def remember(self, owner: JID, prefs: Prefs, changes: int) -> None:
        """Keep ``prefs``, read when :attr:`changes` was ``changes``, unless a change came since."""
        if changes == self.changes:
            self._entries[owner] = prefs
            self._entries.move_to_end(owner)
            while len(self._entries) > _PREFS_KEPT:
                self._entries.popitem(last=False)

    def changed(self, owner: JID, prefs: Prefs | None) -> None:
        """Record a change of ``owner``'s preferences; None when storage alone knows the outcome."""
        self.changes += 1
        self._entries.pop(owner, None)
        if prefs is not None:
            self.remember(owner, prefs, self.changes)

    def clear(self) -> None:
        self.changes += 1
        self._entries.clear()


class Mam(Module[MamOptions]):
    """Archives each account's messages and answers its archive queries (XEP-0313)."""

    name = "mam"
    account_features = (NS, EXTENDED, ns.SID)
    Options = MamOptions

    def setup(self) -> None:
        self._purger: asyncio.Task[None] | None = None
        self._recent = _RecentPrefs()
        bus = self.server.cluster.bus
        bus.on_changed(self._changed_elsewhere)
        # Announcements may have been missed while the subscription was broken.
        bus.on_resubscribed(self._recent.clear)
        for target in ("bare", "full", "remote"):
            self.route(f"pre-message/{target}", self.archive_outgoing, priority=50)
            self.route(f"pre-message/{target}", self.unstamp_outgoing, priority=-1000)
        for target in ("bare", "full", "self"):
            self.route(f"message/{target}", self.archive_incoming, priority=50)
        self.iq("self", QUERY, get=self.form, set=self.query)
        self.iq("self", METADATA, get=self.metadata)
        self.iq("self", PREFS, get=self.get_prefs, set=self.set_prefs)
        for payload in (QUERY, METADATA, PREFS):
            self.iq("bare", payload, get=self.refuse, set=self.refuse)
        self.hook("user-deleted", self.forget)

    async def start(self) -> None:
        if self.options.retention_days:
            self._purger = asyncio.create_task(self._purge_periodically())

    async def stop(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger

    # --- archiving ---------------------------------------------------------------------------

    async def archive_outgoing(self, stanza: Stanza, origin: Session | None) -> None:
        """Archive what a local client sends, for its sender (to = the contact, XEP-0441 §2.3.2)."""
        assert origin is not None, "pre- routes carry a session's stanzas"
        owner = origin.jid.bare
        to = stanza.to
        if to is None or to.bare == owner:
            return  # archived once, on arrival
        strip_stanza_ids(stanza.el, _claims(owner))
        if to.domain in self.server.hosts:
            # This server speaks for the local recipient's archive too: the sender's archive
            # keeps no stanza-id a client made up in its name.
            strip_stanza_ids(stanza.el, _claims(to.bare))
        if worth_archiving(stanza) and await self._archives(owner, to):
            item_id = new_item_id()
            self.server.router.defer(stanza, self._append(owner, to, stanza.el, item_id),
                                     undo=functools.partial(self._take_back, owner, item_id))
            stanza.el.append(stanza_id(item_id, str(owner)))

    async def unstamp_outgoing(self, stanza: Stanza, origin: Session | None) -> None:
        """§3.5: the sender's archive id, there for the sender's carbons, does not go to the contact."""
        assert origin is not None, "pre- routes carry a session's stanzas"
        strip_stanza_ids(stanza.el, _claims(origin.jid.bare))

    async def archive_incoming(self, stanza: Stanza, origin: Session | None) -> None:
        """Archive a message for its local recipient and stamp the archive id on it (§3.5)."""
        if stanza.to is None:
            assert origin is not None, "only a session's stanza has no 'to'"
            # RFC 6120 §10.3.1: as if sent to the sender's bare JID, which delivery writes in too.
            stanza.set_to(origin.jid.bare)
        assert stanza.to is not None
        owner = stanza.to.bare
        strip_stanza_ids(stanza.el, _claims(owner))
        if not worth_archiving(stanza):
            return
        peer = stanza.from_ if stanza.from_ is not None else JID(None, owner.domain)
        if not await self._exists(owner) or not await self._archives(owner, peer):
            return
        item_id = new_item_id()
        self.server.router.defer(stanza, self._append(owner, peer, stanza.el, item_id),
                                 undo=functools.partial(self._take_back, owner, item_id))
        stanza.el.append(stanza_id(item_id, str(owner)))

    def _append(self, owner: JID, peer: JID, el: Element, item_id: str) -> asyncio.Future[str]:
        """Append ``el`` as it is now, under ``item_id`` and ``peer``'s bare JID and resource,
        without waiting for the commit: the router does (deferred writes), and the stanza goes on
        with its id meanwhile."""
        assert owner.local is not None
        return self.server.storage.archive.append_soon(
            owner.domain, owner.local, STORE, now(), str(peer.bare), serialize(el).encode(), item_id=item_id,
            resource=peer.resource or "",
        )

    async def _take_back(self, owner: JID, item_id: str) -> None:
        """§6: a message the server refused after archiving it (the recipient's offline store is
        full) leaves both archives: it was not accepted, and the sender may send it again."""
        assert owner.local is not None
        await self.server.storage.archive.delete(owner.domain, owner.local, STORE, ids=[item_id])

    async def _exists(self, owner: JID) -> bool:
        """Whether the account exists; one with a session does, without asking storage, and so
        does one whose preferences are kept (only for existing accounts, and forgotten on every
        node when the account is deleted): a burst of messages to an offline account asks once."""
        if self.server.sessions.is_online(owner) or self._recent.get(owner) is not None:
            return True
        assert owner.local is not None
        return await self.server.storage.accounts.get(owner.domain, owner.local) is not None

    async def _archives(self, owner: JID, peer: JID) -> bool:
        """XEP-0441 §2.3: whether the owner's preferences archive messages with ``peer``."""
        decision = (await self._prefs(owner)).archives(peer)
        if decision is not None:
            return decision
        assert owner.local is not None
        return await self.server.storage.roster.get_item(owner.domain, owner.local, str(peer.bare)) is not None

    # --- preferences -------------------------------------------------------------------------

    async def _prefs(self, owner: JID) -> Prefs:
        prefs = self._recent.get(owner)
        if prefs is None:
            assert owner.local is not None
            changes = self._recent.changes
            data = await self.server.storage.kv.get(owner.domain, owner.local, PREFS_STORE)
            prefs = Prefs.from_xml(parse_frame(data, len(data))) if data is not None else Prefs(self.options.default_policy)
            self._recent.remember(owner, prefs, changes)
        return prefs

    async def get_prefs(self, stanza: Stanza, origin: Session | None) -> Element:
        """XEP-0441 §2.1: the current preferences."""
        assert origin is not None
        return stanza.result((await self._prefs(origin.jid.bare)).to_xml())

    async def set_prefs(self, stanza: Stanza, origin: Session | None) -> Element:
        """XEP-0441 §2.1: replace the preferences; the reply shows them as applied."""
        assert origin is not None and stanza.payload is not None
        prefs = _decode(Prefs.from_xml, stanza.payload)
        data = serialize(prefs.to_xml()).encode()
        owner = origin.jid.bare
        # Every other node drops its copy whether or not the write went through; this one too
        # when it failed.
        try:
            await announced(self.server.cluster.bus, PREFS_STORE, str(owner),
                            self.server.storage.kv.set(origin.host, origin.username, PREFS_STORE, data))
        except BaseException:
            self._recent.changed(owner, None)
            raise
        self._recent.changed(owner, prefs)
        return stanza.result(prefs.to_xml())

    async def forget(self, host: str, username: str) -> None:
        """A deleted account's preferences went with it (storage deleted them): every node drops
        its copy, so that a new account of that name starts with the defaults."""
        owner = JID(username, host)
        self._recent.changed(owner, None)
        await self._announce(owner)

    async def _announce(self, owner: JID) -> None:
        await self.server.cluster.bus.announce(PREFS_STORE, str(owner))

    def _changed_elsewhere(self, store: str, account: str) -> None:
        """Another node of the cluster changed ``account``'s preferences, or deleted the account."""
        if store == PREFS_STORE:
            self._recent.changed(JID.parse(account), None)

    # --- queries -----------------------------------------------------------------------------

    async def form(self, stanza: Stanza, _origin: Session | None) -> Element:
        """§4.1.5: the fields a query may use."""
        return stanza.result(element(QUERY, children=[query_form()]))

    async def refuse(self, _stanza: Stanza, _origin: Session | None) -> Element:
        """§8.1: an archive is its account's alone."""
        raise StanzaError("forbidden", "a message archive belongs to its account alone")

    async def metadata(self, stanza: Stanza, origin: Session | None) -> Element:
        """§5: the first and the last message of the archive."""
        assert origin is not None
        archive = self.server.storage.archive
        first = await archive.query(origin.host, origin.username, STORE, limit=1, count=False)
        last = await archive.query(origin.host, origin.username, STORE, limit=1, reverse=True, count=False)
        return stanza.result(Metadata(_edge(first), _edge(last)).to_xml())

    async def query(self, stanza: Stanza, origin: Session | None) -> Element:
        """§4: send the matching page of messages to the querying resource, then the ``<fin/>``."""
        assert origin is not None and stanza.payload is not None
        query = _decode(Query.from_xml, stanza.payload)
        rsm = query.rsm or ResultSet()
        if rsm.index is not None:
            raise StanzaError("feature-not-implemented", "page with <after/> or <before/>, not by index")
        limit = min(rsm.max, self.options.max_page_size) if rsm.max is not None else self.options.max_page_size
        owner = origin.jid.bare
        try:
            page = await self._page(owner, query, limit)
        except ItemNotFound:
            raise StanzaError("item-not-found", "no message with that id in the archive") from None
        items = page.items
        for item in reversed(items) if query.flip_page else items:
            try:
                message = parse_frame(item.payload, _MAX_STORED)
            except StreamError as err:
                log.warning("skipping unreadable archived message %s of %s: %s", item.id, owner, err.condition)
                continue
            result = Result(item.id, Forwarded(message, moment(item.timestamp)), query.queryid)
            origin.send(element(
                qname(ns.CLIENT, "message"), {"from": str(owner), "to": str(origin.jid), "id": item.id},
                children=[result.to_xml()],
            ))  # fmt: skip
        first, last = (items[0].id, items[-1].id) if items else (None, None)
        summary = ResultSet(first=first, last=last, count=page.count)
        return stanza.result(Fin(summary, complete=page.complete).to_xml())

    async def _page(self, owner: JID, query: Query, limit: int) -> ArchivePage:
        """The page the query asks for, in chronological order.

        §4.3.2: ``after`` and ``before`` page forwards and backwards; §4.1.3: ``after-id`` and
        ``before-id`` bound the result set (and so its count) without changing the direction, and
        every id named must be in the archive.
        """
        flt, rsm = query.filter, query.rsm or ResultSet()
        assert owner.local is not None
        host, user = owner.domain, owner.local
        archive = self.server.storage.archive
        await check_ids(archive, host, user, STORE, flt.ids, self.options.max_page_size)
        backward = rsm.before is not None
        with_jid = flt.with_jid
        start = widened(flt.start, -1) if flt.start is not None else None
        end = widened(flt.end, 1) if flt.end is not None else None
        # The archive files a message under the contact's bare JID and resource (the account's own
        # for a message between its resources, with the sender's resource); one of the account's
        # own resources takes part in messages with every contact, so its messages are looked for
        # in the whole archive.
        own_resource = with_jid is not None and not with_jid.is_bare and with_jid.bare == owner
        filed_under = str(with_jid.bare) if with_jid is not None and not own_resource else None
        resource = with_jid.resource if with_jid is not None and not own_resource else None

        async def read(after: str | None, before: str | None, limit: int, count: bool = False) -> ArchivePage:
            return await archive.query(
                host, user, STORE, with_jid=filed_under, start=start, end=end, ids=flt.ids,
                after_id=flt.after_id, before_id=flt.before_id, after=after, before=before, limit=limit,
                reverse=backward, count=count, resource=resource,
            )  # fmt: skip

        after, before = rsm.after or None, rsm.before or None
        if with_jid is None or with_jid.is_bare:
            return await read(after, before, limit, count=limit == 0)
        return await scan(read, with_jid, limit, after, before, backward=backward, by_resource=resource is not None,
                          instead=" or ask with the bare JID")

    # --- retention ---------------------------------------------------------------------------

    async def _purge_periodically(self) -> None:
        while True:
            try:
                await self.purge()
            except Exception:
                log.exception("purging expired archived messages failed")
            await asyncio.sleep(_PURGE_PERIOD)

    async def purge(self) -> int:
        """§3.2: delete the messages older than ``retention_days`` from every archive; how many."""
        cutoff = time.time() - self.options.retention_days * 86400
        storage = self.server.storage
        deleted = 0
        for host in self.server.config.domains:
            for user in await storage.accounts.list(host):
                deleted += await storage.archive.delete(host, user, STORE, before=cutoff)
        if deleted:
            log.info("deleted %d archived messages older than %d days", deleted, self.options.retention_days)
        return deleted


def _claims(owner: JID) -> Callable[[str], bool]:
    """Whether a stanza-id's 'by' names the account ``owner``."""
    owner_text = str(owner)

    def claims(by: str) -> bool:
        if by == owner_text:
            return True
        try:
            return JID.parse(by) == owner
        except JIDError:
            return False

    return claims


async def check_ids(archive: ArchiveStore, host: str, username: str, store: str, ids: Sequence[str] | None,
                    most: int) -> None:
    """§4.1.3: every id the 'ids' field names must be in the archive (ItemNotFound if one is not),
    not just filter it: a client asking for a message by its id learns that the message is gone.
    More than ``most`` ids (the page size, so that all found fit one page) are policy-violation
    (RFC 6120 §8.3.3.12): unbounded, they would exceed what storage binds in one statement."""
    if ids is not None:
        if len(ids) > most:
            raise StanzaError("policy-violation", f"a query may name at most {most} ids")
        known = await archive.query(host, username, store, ids=ids, count=False)
        if len(known.items) != len(set(ids)):
            raise ItemNotFound("an id of the 'ids' field is not in the archive")


async def scan(read: Callable[[str | None, str | None, int], Awaitable[ArchivePage]], jid: JID, limit: int,
               after: str | None, before: str | None, *, backward: bool, by_resource: bool,
               instead: str) -> ArchivePage:
    """§4.1.1: the page of the messages to or from exactly ``jid``, a full JID, in chronological
    order. ``read(after, before, limit)`` reads the archive as the query narrows it, in the
    query's direction: with ``by_resource``, the messages archived with ``jid``'s resource (by an
    index, and taken as they are) and those archived before resources were kept; else all of
    them. Each of those not taken as they are is parsed and compared.

    Reading goes on until a page of those messages is found, or, for their number alone (XEP-0059
    §2.7), to the end; either way only the page and the one message after it (which makes it
    incomplete) are kept. At most SCAN_MOST messages are parsed: what was found by then is the
    page, incomplete; nothing found (or a count not finished) is policy-violation, as the same
    query would meet it again, saying to narrow the query by time, or what ``instead`` says.
    """
    counting = limit == 0
    found: list[ArchivedItem] = []
    matched = examined = 0
    # Messages with the resource need no parsing: the first read asks for one page of them.
    parsing = not by_resource
    while counting or len(found) <= limit:
        if examined >= SCAN_MOST:
            if counting or not found:
                raise StanzaError("policy-violation", f"the archive reads at most {SCAN_MOST} messages for a "
                                  f"query with a full JID: narrow it by time (start, end){instead}")
            return _page_of(found[:limit], backward, complete=False)
        size = min(_SCAN_BATCH, SCAN_MOST - examined) if parsing or counting else limit + 1 - len(found)
        batch = await read(after, before, size)
        items = list(reversed(batch.items)) if backward else batch.items
        unsure = [item for item in items if not by_resource or item.resource is None]
        parsing = parsing or bool(unsure)
        examined += len(unsure)
        mine = [item for item in items if (by_resource and item.resource is not None) or _involves(item, jid)]
        matched += len(mine)
        found += mine[: limit + 1 - len(found)]
        if batch.complete or not items:
            break
        if backward:
            before = items[-1].id
        else:
            after = items[-1].id
    return _page_of(found[:limit], backward, complete=len(found) <= limit, count=matched if counting else None)


def _decode(parse: Callable[[Element], T], el: Element) -> T:
    try:
        return parse(el)
    except MamError as err:
        raise StanzaError(err.condition, err.text) from None


def now() -> float:
    """The time to the microsecond, as :func:`moment` shows it: §4.1.2's start and end then find
    a message by the stamp a client was shown for it (a result's ``<delay/>``, §5's metadata).
    Rounded from the clock's nanoseconds as an integer: the float nearest the microsecond, as
    ``round(time.time(), 6)`` gives, without the decimal conversion that costs that call 8,000
    instructions (docs/benchmarks.md)."""
    return (time.time_ns() + 500) // 1000 / 1_000_000


def moment(timestamp: float) -> datetime:
    """An archived time as results, metadata and history show it (§4.2, §5), to the microsecond."""
    return datetime.fromtimestamp(timestamp, UTC)


def widened(shown: datetime, side: int) -> float:
    """§4.1.2: ``shown`` moved half a microsecond earlier (``side`` -1) or later (1), as near as a
    float is, so that an inclusive bound takes in every timestamp :func:`moment` shows as
    ``shown``: archives kept before timestamps were stored to the microsecond hold finer ones."""
    return (2 * ((shown - _EPOCH) // _MICROSECOND) + side) / 2_000_000


def _edge(page: ArchivePage) -> Edge | None:
    return Edge(page.items[0].id, moment(page.items[0].timestamp)) if page.items else None


def _page_of(items: list[ArchivedItem], backward: bool, *, complete: bool, count: int | None = None) -> ArchivePage:
    """The page of ``items`` found in reading order, in chronological order."""
    return ArchivePage(list(reversed(items)) if backward else items, complete, count)


def _involves(item: ArchivedItem, jid: JID) -> bool:
    """Whether the archived message was sent to or from exactly ``jid``."""
    try:
        message = parse_frame(item.payload, _MAX_STORED)
    except StreamError:
        return False
    for address in (message.get("from"), message.get("to")):
        if address:
            with contextlib.suppress(JIDError):
                if JID.parse(address) == jid:
                    return True
    return False
