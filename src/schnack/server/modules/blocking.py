"""XEP-0191: Blocking Command (v1.3): each account's blocklist, and the stanzas it stops.

The commands (§3.2-§3.5) are IQs without 'to' (route ``iq/self``): ``<blocklist/>`` returns the
list and makes the session *interested*, so that it gets a push (§3.3, §3.4, §3.5) for every
later block and unblock, as a roster get does for roster pushes. The list lives in the map store
``blocklist`` under each blocked JID (normalised, RFC 7622) and survives restarts; the lists
in use are cached, at most ``cached_lists`` of them, least recently used first out. In a cluster
a node that changes a list tells the others (``ClusterBus.announce``): they drop their copy, and
push what changed since it to the account's interested resources they hold (a node that no
longer held the list its resources were given pushes nothing; they read the list anew when they
log in again). An account cannot block itself. An entry covers addresses by the matching rules of §6 (see
:func:`~schnack.xmpp.payloads.blocking.blocks`).

Enforcement (§3.3) runs at priority 1000, before any other module sees the stanza:

- Outbound, on ``pre-{message,presence,iq}/{bare,full,remote,service}``: a stanza a client
  sends to an address its account blocks is not routed; the client gets not-acceptable with
  ``<blocked xmlns='urn:xmpp:blocking:errors'/>``.
- Inbound, on ``{message,presence,iq}/{bare,full}`` and, for IQ get/set, on ``iq/{bare,full}/*``
  (which the router runs before the payload routes, whoever sent the IQ: a module that answers
  for the account, e.g. vCard or disco, never sees a blocked sender's request): a stanza for an
  account from an address it blocks, here or at another server, is not delivered. Presence is
  dropped without an answer; a message or an IQ get/set is answered with service-unavailable, as
  for an account that is not there; IQ results and errors are dropped.
- What the server itself sends on a user's behalf (presence broadcasts and probe answers, PEP
  notifications, origin None) does not reach an address the user blocks either, here or, on
  ``{message,presence}/remote``, at another server; except presence of type unavailable,
  unsubscribe and unsubscribed, which only withdraw (the blocked contact sees the user
  offline), and errors, which answer what the blocked address sent (§3.3 wants it to get them).
  When the user blocks only some resources of a local contact, available presence the server
  broadcasts to the contact's bare JID goes to each of the contact's other available resources
  instead, addressed to it, on whichever cluster node it is.

Messages that waited in offline storage from before the block are not delivered either
(module offline asks :meth:`Blocking.is_blocked` for each).

The user's own account and the server's domains themselves are never blocked.

Presence (§3.3, §3.4): blocking a contact that may see the user's presence (roster subscription
"from" or "both") sends it unavailable presence from each available resource of the user, on
whichever cluster node it is; one
that a resource sent directed presence to (RFC 6121 §4.6) gets unavailable presence from that
resource, which forgets it, so that it is not told again when the resource goes offline (in a
cluster, the nodes that hear of the change do so for their resources);
unblocking sends it their current presence again, and probes the contacts whose presence the
user sees ("to" or "both"), whose updates were dropped meanwhile. A full JID in the list
concerns only that resource of the contact. Contacts at other servers are told only while
``[s2s] enabled`` (:func:`~.roster.reachable`, as for presence broadcasts).

A subscription request that the user has not answered yet stays kept while its sender is
blocked, so that the states of both sides stay in step, but the presence module asks
:meth:`Blocking.is_blocked` before handing it out at login: it shows again once unblocked.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID, JIDError
from ...xmpp.payloads.blocking import (
    BLOCK,
    BLOCKLIST,
    NS,
    UNBLOCK,
    Block,
    BlockingError,
    Blocklist,
    Unblock,
    blocked_condition,
    blocks,
)
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname
from ..background import Background
from ..cluster.bus import announced
from ..config import bounded
from ..hooks import HANDLED, Handled
from ..module import Module
from ..router import ANY_PAYLOAD
from .directed import Directed
from .roster import reachable, send_absence

if TYPE_CHECKING:
    from ..sessions import Session

log = logging.getLogger(__name__)

STORE = "blocklist"
_IQ = qname(ns.CLIENT, "iq")
_PRESENCE = qname(ns.CLIENT, "presence")
# Presence that only takes something away from its recipient, and so may reach a blocked contact.
_WITHDRAWALS = frozenset({"unavailable", "unsubscribe", "unsubscribed"})
_SEES_USER = frozenset({"from", "both"})
_SEEN_BY_USER = frozenset({"to", "both"})
_BLOCKED_TEXT = "you have blocked this address; unblock it to communicate with it"

Command = TypeVar("Command", Block, Unblock)


@dataclass(frozen=True)
class BlockingOptions:
    """How long a blocklist may grow, and how many of them are kept in memory."""

    max_items: int = bounded(10_000, min=1, max=1_000_000, help="blocked JIDs per account")
    cached_lists: int = bounded(10_000, min=1, max=10_000_000, help="blocklists kept in memory")


@dataclass
class BlocklistView:
    """Per session: whether it asked for the blocklist, and so gets pushes (§3.3)."""

    interested: bool = False


def _command(parse: Callable[[Element], Command], payload: Element) -> Command:
    try:
        return parse(payload)
    except BlockingError as err:
        raise StanzaError(err.condition, err.text) from None


def _addressed(el: Element, to: JID) -> Element:
    """A copy of presence ``el`` for ``to``; the children are shared, not copied."""
    return element(el.tag, {**el.attrib, "to": str(to)}, el.text, el)


class Blocking(Module[BlockingOptions]):
    """Blocklist commands and pushes (XEP-0191 §3), and the blocking of stanzas."""

    name = "blocking"
    features = (NS,)
    account_features = (NS,)
    Options = BlockingOptions

    def setup(self) -> None:
        self._lists: OrderedDict[JID, frozenset[JID]] = OrderedDict()
        # Counts changes of any list, so that a list read from storage during a change is read again.
        self._changes = 0
        # Changes are rare; one lock keeps each change, its pushes and the cache in step.
        self._lock = asyncio.Lock()
        bus = self.server.cluster.bus
        bus.on_changed(self._changed_elsewhere)
        # Announcements may have been missed while the subscription was broken.
        bus.on_resubscribed(self._forget_all)
        self._pushing = Background(log, "pushing a blocklist changed on another node failed")
        self.iq("self", BLOCKLIST, get=self.get)
        self.iq("self", BLOCK, set=self.block)
        self.iq("self", UNBLOCK, set=self.unblock)
        for kind in ("message", "presence", "iq"):
            for target in ("bare", "full", "remote", "service"):
                self.route(f"pre-{kind}/{target}", self.outgoing, priority=1000)
            for target in ("bare", "full"):
                self.route(f"{kind}/{target}", self.incoming, priority=1000)
        for target in ("bare", "full"):
            self.route(f"iq/{target}/{ANY_PAYLOAD}", self.incoming, priority=1000)
        for kind in ("message", "presence"):
            self.route(f"{kind}/remote", self.to_remote, priority=1000)
        self.hook("user-deleted", self.forget)

    # The list ----------------------------------------------------------------------------------

    async def blocklist(self, owner: JID) -> frozenset[JID]:
        """The JIDs the account ``owner`` (a bare JID) blocks."""
        cached = self._lists.get(owner)
        if cached is not None:
            self._lists.move_to_end(owner)
            return cached
        assert owner.local is not None
        while True:
            changes = self._changes
            stored = await self.server.storage.maps.items(owner.domain, owner.local, STORE)
            if changes == self._changes:
                break
        items = []
        for key in stored:
            try:
                items.append(JID.parse(key))
            except JIDError as err:
                log.warning("ignoring an unreadable blocklist entry of %s: %s", owner, err)
        blocklist = frozenset(items)
        self._remember(owner, blocklist)
        return blocklist

    async def is_blocked(self, owner: JID, jid: JID) -> bool:
        """Whether the account ``owner`` (a bare JID) blocks ``jid`` (§6 matching); never its own
        account nor the server itself, whatever domain the list holds."""
        return not self._never_blocked(owner, jid) and blocks(await self.blocklist(owner), jid)

    def _never_blocked(self, owner: JID, jid: JID) -> bool:
        return jid.bare == owner or (jid.local is None and jid.domain in self.server.hosts)

    def _remember(self, owner: JID, blocklist: frozenset[JID]) -> None:
        self._lists[owner] = blocklist
        self._lists.move_to_end(owner)
        while len(self._lists) > self.options.cached_lists:
            self._lists.popitem(last=False)

    def _changed(self, owner: JID, blocklist: frozenset[JID] | None) -> None:
        """Record a change of ``owner``'s list; None when storage alone knows the outcome."""
        self._changes += 1
        if blocklist is None:
            self._lists.pop(owner, None)
        else:
            self._remember(owner, blocklist)

    async def stop(self) -> None:
        await self._pushing.wait()

    def _changed_elsewhere(self, store: str, account: str) -> None:
        """Another node of the cluster changed ``account``'s list: what this node keeps goes, the
        interested resources here get the change pushed (§3.3, §3.4), and those that directed
        presence to an address it blocks now withdraw it."""
        if store != STORE:
            return
        owner = JID.parse(account)
        known = self._lists.get(owner)
        self._changed(owner, None)
        if known is not None and self._interested(owner):
            self._pushing.spawn(self._push_since(owner, known))
        if any(session.slot(Directed).to for session in self.server.sessions.resources(owner)):
            self._pushing.spawn(self._withdraw_directed_now(owner))

    async def _withdraw_directed_now(self, owner: JID) -> None:
        """A block made through another node: the resources here withdraw their directed presence
        from what the list blocks now (§3.3)."""
        await self._withdraw_directed(owner, await self.blocklist(owner), ())

    async def _push_since(self, owner: JID, known: frozenset[JID]) -> None:
        """Push what changed in ``owner``'s list since ``known``, the list this node had: the one
        its interested resources were given or pushed last."""
        async with self._lock:
            now = await self.blocklist(owner)
            if added := now - known:
                self._push(owner, Block(tuple(sorted(added, key=str))))
            if removed := known - now:
                self._push(owner, Unblock(tuple(sorted(removed, key=str))))

    def _forget_all(self) -> None:
        self._changes += 1
        self._lists.clear()

    async def _announce(self, owner: JID) -> None:
        await self.server.cluster.bus.announce(STORE, str(owner))

    async def _write(self, owner: JID, write: Awaitable[None]) -> None:
        """Await a change to ``owner``'s stored list. Every other node drops its copy whether or
        not the change went through, and so does this one when it failed: part of it may be stored."""
        try:
            await announced(self.server.cluster.bus, STORE, str(owner), write)
        except BaseException:
            self._changed(owner, None)
            raise

    async def _set(self, owner: JID, jids: Collection[JID], value: bytes | None) -> None:
        """Store (``b""``) or remove (None) each of ``jids`` in ``owner``'s list."""
        assert owner.local is not None
        for jid in jids:
            await self.server.storage.maps.set(owner.domain, owner.local, STORE, str(jid), value)

    async def forget(self, host: str, username: str) -> None:
        """A deleted account's blocklist goes with it; a new account at the address starts empty."""
        await self.server.storage.maps.delete_all(host, username, STORE)
        self._changed(JID(username, host), None)
        await self._announce(JID(username, host))

    # The commands ------------------------------------------------------------------------------

    async def get(self, stanza: Stanza, origin: Session | None) -> Handled:
        """§3.2: the list, sorted; from now on the session gets pushes.

        Answered under the lock, so that every push the session gets is about a change that
        came after the list it holds.
        """
        assert origin is not None
        async with self._lock:
            origin.slot(BlocklistView).interested = True
            items = await self.blocklist(origin.jid.bare)
            origin.send(stanza.result(Blocklist(tuple(sorted(items, key=str))).to_xml()))
        return HANDLED

    async def block(self, stanza: Stanza, origin: Session | None) -> Element:
        """§3.3: add one or more JIDs (an empty block is a bad request), push, hide the user's presence."""
        assert origin is not None and stanza.payload is not None
        command = _command(Block.from_xml, stanza.payload)
        owner = origin.jid.bare
        assert owner.local is not None
        requested = tuple(dict.fromkeys(command.items))
        if any(jid.bare == owner for jid in requested):
            raise StanzaError("not-acceptable", "you cannot block your own account")
        async with self._lock:
            old = await self.blocklist(owner)
            added = [jid for jid in requested if jid not in old]
            if len(old) + len(added) > self.options.max_items:
                raise StanzaError("not-allowed", f"your blocklist is full ({self.options.max_items} entries)")
            new = old.union(added)
            await self._write(owner, self._set(owner, added, b""))
            self._changed(owner, new)
            self._push(owner, Block(requested))
        await self._hide_presence(owner, old, new)
        return stanza.result()

    async def unblock(self, stanza: Stanza, origin: Session | None) -> Element:
        """§3.4: remove the JIDs listed; §3.5: without items, remove all; push, show the presence again."""
        assert origin is not None and stanza.payload is not None
        command = _command(Unblock.from_xml, stanza.payload)
        owner = origin.jid.bare
        assert owner.local is not None
        requested = tuple(dict.fromkeys(command.items))
        async with self._lock:
            old = await self.blocklist(owner)
            new = old.difference(requested) if requested else frozenset()
            await self._write(owner, self._set(owner, old.intersection(requested), None) if requested
                              else self.server.storage.maps.delete_all(owner.domain, owner.local, STORE))
            self._changed(owner, new)
            self._push(owner, Unblock(requested))
        await self._show_presence(owner, old, new)
        return stanza.result()

    def _interested(self, owner: JID) -> list[Session]:
        """The resources of ``owner`` here that asked for the list (§3.2)."""
        return [s for s in self.server.sessions.resources(owner) if not s.closed and s.slot(BlocklistView).interested]

    def _push(self, owner: JID, command: Block | Unblock) -> None:
        """§3.3, §3.4, §3.5: the command to each interested resource, addressed to it, without 'from'."""
        for session in self._interested(owner):
            attrs = {"type": "set", "id": f"push-{secrets.token_urlsafe(9)}", "to": str(session.jid)}
            session.send(element(_IQ, attrs, children=(command.to_xml(),)))

    # Enforcement -------------------------------------------------------------------------------

    async def outgoing(self, stanza: Stanza, origin: Session | None) -> None:
        """§3.3: what a local client sends to an address its account blocks is refused."""
        assert origin is not None and stanza.to is not None
        to = stanza.to
        owner = origin.jid.bare
        if to.bare == owner:
            return None
        if blocks(await self.blocklist(owner), to):
            raise StanzaError("not-acceptable", _BLOCKED_TEXT, type="cancel", extra=blocked_condition())
        return None

    async def incoming(self, stanza: Stanza, origin: Session | None) -> Handled | None:
        """§3.3: what reaches a local account from an address it blocks is not delivered.

        What the server sends on behalf of a local user (origin None) does not reach an address
        that user blocks (:meth:`_for_user`); what a client sent met its own blocklist on the
        ``pre-`` routes already.
        """
        sender, to = stanza.from_, stanza.to
        if sender is None or to is None:
            return None
        owner = to.bare
        if self._never_blocked(owner, sender):
            return None
        if origin is None and self._for_user(stanza, sender):
            sender_list = await self.blocklist(sender.bare)
            if blocks(sender_list, to):
                return HANDLED
            if (
                to.resource is None
                and stanza.kind == "presence"
                and stanza.type is None
                and any(jid.resource is not None and jid.bare == owner for jid in sender_list)
            ):
                await self._around(stanza, owner, sender_list)
                return HANDLED
        return await self._inbound(stanza, owner, sender)

    async def to_remote(self, stanza: Stanza, origin: Session | None) -> Handled | None:
        """§3.3: what the server sends on behalf of a local user does not reach an address at
        another server that the user blocks (see :meth:`incoming`)."""
        sender, to = stanza.from_, stanza.to
        if origin is not None or sender is None or to is None or not self._for_user(stanza, sender):
            return None
        return HANDLED if blocks(await self.blocklist(sender.bare), to) else None

    def _for_user(self, stanza: Stanza, sender: JID) -> bool:
        """Whether a stanza the server sends (origin None) is one its user's blocklist holds back:
        from a local account, and neither presence that only withdraws nor an error, which
        answers what the blocked address sent."""
        if sender.local is None or sender.domain not in self.server.hosts or stanza.type == "error":
            return False
        return not (stanza.kind == "presence" and stanza.type in _WITHDRAWALS)

    async def _around(self, stanza: Stanza, owner: JID, blocklist: frozenset[JID]) -> None:
        """Available presence for the account ``owner`` goes to each of its available resources
        that ``blocklist`` does not block, here or on other cluster nodes, addressed to it."""
        here = [str(s.jid) for s in self.server.sessions.resources(owner) if s.available and not s.closed]
        elsewhere = await self.server.cluster.presence.available(owner)
        for full in dict.fromkeys([*here, *elsewhere]):
            jid = JID.parse(full)
            if not blocks(blocklist, jid):
                await self.server.router.send(_addressed(stanza.el, jid))

    async def _inbound(self, stanza: Stanza, owner: JID, sender: JID) -> Handled | None:
        """§3.3: presence is dropped silently, messages and IQ get/set get service-unavailable."""
        if not blocks(await self.blocklist(owner), sender):
            return None
        if stanza.kind == "presence" or stanza.type == "error":
            return HANDLED
        if stanza.kind == "iq" and stanza.type not in ("get", "set"):
            return HANDLED
        raise StanzaError("service-unavailable")

    # Presence on block and unblock --------------------------------------------------------------

    async def _hide_presence(self, owner: JID, old: frozenset[JID], new: frozenset[JID]) -> None:
        """§3.3: unavailable presence to each newly blocked contact that may see the user's
        presence: by its subscription, or by directed presence (RFC 6121 §4.6), which a resource
        may send before its initial presence too. In a cluster, the available resources on
        other nodes are withdrawn too; directed presence is known only for those here."""
        told = await self._contacts(owner, new, old, _SEES_USER)
        await send_absence(self.server, owner, told)
        await self._withdraw_directed(owner, new, told)

    async def _withdraw_directed(self, owner: JID, blocklist: frozenset[JID], told: Collection[JID]) -> None:
        """RFC 6121 §4.6: each resource of ``owner`` here withdraws its directed presence from the
        addresses ``blocklist`` blocks, with unavailable presence (but to the contacts ``told``
        by subscription already, when it is available), and forgets it, so that going offline
        later tells them nothing more. A client cannot direct presence to a blocked address, so
        whatever is blocked there was directed before the block."""
        for session in self.server.sessions.resources(owner):
            directed = session.slot(Directed)
            withdrawn = {jid for jid in directed.to if blocks(blocklist, jid)}
            if session.closed or not withdrawn:
                continue
            directed.to -= withdrawn
            covered = told if session.available else ()
            for jid in sorted(withdrawn, key=str):
                if jid not in covered and jid.bare not in covered:
                    attrs = {"type": "unavailable", "from": str(session.jid), "to": str(jid)}
                    await self.server.router.send(element(_PRESENCE, attrs))
            await self.server.hooks.fire_all("session-changed", session)

    async def _show_presence(self, owner: JID, old: frozenset[JID], new: frozenset[JID]) -> None:
        """§3.4, §3.5: current presence of each available resource, on any cluster node, to each
        unblocked contact that may see it; probes the others back for each of them."""
        here = [session.presence for session in self._available(owner) if session.presence is not None]
        presences = here + await self.server.cluster.presence.presences(owner)
        if not presences:
            return
        for contact in await self._contacts(owner, old, new, _SEES_USER):
            for presence in presences:
                await self.server.router.send(_addressed(presence, contact))
        probed = dict.fromkeys(contact.bare for contact in await self._contacts(owner, old, new, _SEEN_BY_USER))
        for contact in probed:
            for presence in presences:
                attrs = {"type": "probe", "from": presence.get("from", ""), "to": str(contact)}
                await self.server.router.send(element(_PRESENCE, attrs))

    async def _contacts(
        self, owner: JID, covered: frozenset[JID], uncovered: frozenset[JID], subscriptions: frozenset[str]
    ) -> list[JID]:
        """The reachable contacts with one of ``subscriptions`` that ``covered`` blocks and ``uncovered`` does not.

        A contact blocked as a whole is given by its bare JID; one of whom only some resources
        are, by those full JIDs. ``uncovered`` is a subset of ``covered``.
        """
        assert owner.local is not None
        _, roster = await self.server.storage.roster.get(owner.domain, owner.local)
        only_covered = covered - uncovered
        contacts: list[JID] = []
        for key, item in sorted(roster.items()):
            if item.subscription not in subscriptions:
                continue
            contact = JID.parse(key)
            if not reachable(self.server, contact):
                continue
            if blocks(covered, contact):
                if not blocks(uncovered, contact):
                    contacts.append(contact)
                continue
            contacts.extend(
                sorted((jid for jid in only_covered if jid.resource is not None and jid.bare == contact), key=str)
            )
        return contacts

    def _available(self, owner: JID) -> list[Session]:
        return [s for s in self.server.sessions.resources(owner) if s.available and not s.closed]
