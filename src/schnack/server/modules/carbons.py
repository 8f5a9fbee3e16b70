"""XEP-0280: Message Carbons (v1.0, ``urn:xmpp:carbons:2``), with the XEP-0334 ``<no-copy/>`` hint.

A resource turns carbons on and off with an IQ set of ``<enable/>`` or ``<disable/>`` to its
own account (§4, §5), or on with ``<enable/>`` inside a XEP-0386 Bind 2 request; asking again is
no error (§10.1). The state lives in the session's :class:`CarbonsState` slot and ends with the
session. An IQ to another account's bare JID gets not-allowed (§4.1, §5.1). The feature is
announced on the server's domains (§3), with ``urn:xmpp:carbons:rules:0``: every rule of §6.1
below is followed, as a requirement (§6.2).

Copies go to the *carbons-enabled* resources of the account: those that enabled carbons and
are available (RFC 6121 §4.2: they sent initial presence), whatever their priority. Each copy
is a message from the account's bare JID to the resource's full JID, of the original's type,
holding ``<received/>`` or ``<sent/>`` around a XEP-0297 ``<forwarded/>`` with the original.
A resource never gets a copy of a message it sent or got itself. A change of the state fires
``session-changed`` (session), so that in a cluster the copies for resources on other nodes are
sent too (``server/cluster/node.py``).

Received (§7): consumes ``message/delivered`` (stanza, sessions) from the message module, so a
message to a bare JID (delivered to the top-priority resources), to a full JID, or one that
went to offline storage is copied to the enabled resources that did not get it.

Sent (§8): a message a resource sends to someone else (routes ``pre-message/bare``,
``pre-message/full``, ``pre-message/remote`` and ``pre-message/service``) is copied to the
account's other enabled resources, whether the sender enabled carbons or not. The handler runs at
priority -100, after the checks that may refuse the message (the end-to-end policy runs at 1000),
so a refused message is not copied, and after the sender's archive (priority 50), so the copy
carries the ``<stanza-id/>`` by the sender's account under which the archive keeps the message
(XEP-0359, XEP-0313 §3.5). A message to one's own account (bare, or another own resource) is not
copied as sent: its delivery reaches the account, and the other resources get it as received.
Messages to the server's own domains are for the server, not a conversation, and are not copied;
of those to its services, only mediated invitations sent through a group (below). An external
component (XEP-0114, such as a gateway) is no service of the server but a peer like another server:
the rules below hold for its users and groups as for anyone's, both ways (its messages to a user
are delivered, and copied, as any other).

Eligible messages (§6.1): never one with ``<private xmlns='urn:xmpp:carbons:2'/>`` (§9) or the
XEP-0334 ``<no-copy/>`` hint (XEP-0334 §4.3); the element is left in place, as §9's
interoperability note asks. Never one that already carries a ``<sent/>`` or ``<received/>``:
a copy of it would nest one carbon in another, which a client takes for its account's own
(§11) although anyone may have written the inner one. Otherwise: type "chat"; type "normal" with a ``<body/>``; a
receipt (XEP-0184), chat state (XEP-0085) or chat marker (XEP-0333); a direct (XEP-0249) or
mediated (XEP-0045 §7.8.2) invitation, also one sent to a group of this server. Never groupchat.

Private messages through a group (§6.1): a group's messages are told by the address (a group of
this server's group service) or by the ``<x xmlns='http://jabber.org/protocol/muc#user'/>`` mark
(a group elsewhere). Received ones are never copied: the group gave them to every resource joined
under the recipient's nick already. Sent ones are copied to the sender's enabled resources that
share its nick in that group, with the mark added to the copy when the client left it out (the
§6.1 note allows it), so that a client tells it from a chat with a user:

- to a group here, the group knows them: once it passed the message on (so a message it refuses
  is not copied), it fires ``muc/private-sent`` (stanza, the full JIDs joined under the sender's
  nick), and they get the copy, on this node here and on other nodes through ``cluster/carbons.py``;
  the group remembers who got it (the handlers return them), for an error answering it (below);
- to a group elsewhere, the server tracks presence in it (§6.1's own suggestion): the resources
  that sent directed presence (RFC 6121 §4.6, kept by the presence module) to an occupant JID in
  that group that the sender also sent presence to. A group elsewhere that a client joined
  without federation ([s2s] enabled) cannot exist, so then nobody shares the nick.

Errors (§6.1): an error is copied only when it answers a message that was copied as sent, so
that the other devices learn that a message they saw go out failed. A private message through a
group here: the group passes such an error back to the sender and fires ``muc/private-bounced``
(the error, who got the sent copy), on the group's node, which need not be the sender's in a
cluster; those on this node get the copy if still enabled, those on other nodes through the
cluster's ordered post if still connected. Any other message: each account remembers the
id and the recipient's bare JID of its last ``SENT_REMEMBERED`` messages copied as sent, with who
got the copy: every enabled resource on this node, or (a private message through a group
elsewhere) those sharing the nick, and the resources on other nodes that got it
(``cluster/carbons.py`` names them).
It forgets them once it has no carbons-enabled resource here, but for the messages whose copy
went to other nodes while it still has a session here. The sender's session gets an output stage
(priority 200, before client state indication holds anything back) on its first such message,
since an error reaches it by any path: routed back by the recipient or a remote server, answered
at once by the router (service-unavailable from an account that does not exist), passed back by a
group elsewhere (an error answering a private message), or handed over by another cluster node. An error
message passing that stage whose id and sender match a remembered message is copied as received
to those resources (on this node, those enabled then; on other nodes, through the cluster's
ordered post, those still connected), and the message is forgotten. A message refused before the
sent copy went out (the end-to-end policy) is not remembered, so its error is not copied either.
"""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NoReturn
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID, JIDError
from ...xmpp.payloads.bind2 import Bind
from ...xmpp.payloads.carbons import (
    DISABLE,
    ENABLE,
    NS,
    PRIVATE,
    RECEIVED,
    RULES,
    SENT,
    Carbon,
    Direction,
    Toggle,
)
from ...xmpp.payloads.forward import Forwarded
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname, split
from .. import sasl2
from ..component import SERVICE_OWNER
from ..module import Module
from .directed import Directed
from .message import DELIVERED, message_type
from .muc import Muc
from .muc.messages import PRIVATE_BOUNCED, PRIVATE_SENT

if TYPE_CHECKING:
    from ..app import Server
    from ..c2s import C2SStream
    from ..sessions import Forward, Session

_NO_COPY = qname("urn:xmpp:hints", "no-copy")
_MUC_USER = "http://jabber.org/protocol/muc#user"
_MUC_X = qname(_MUC_USER, "x")
_MUC_INVITE = qname(_MUC_USER, "invite")
_DIRECT_INVITE = qname("jabber:x:conference", "x")
# Receipts (XEP-0184), chat states (XEP-0085), chat markers (XEP-0333).
_IM_PAYLOADS = frozenset(
    {"urn:xmpp:receipts", "http://jabber.org/protocol/chatstates", "urn:xmpp:chat-markers:0"}
)
_MESSAGE = qname(ns.CLIENT, "message")
# Private (§9), the no-copy hint (XEP-0334 §4.3), and carbons themselves (§11).
_NEVER_COPIED = (PRIVATE, _NO_COPY, SENT, RECEIVED)


# How many messages copied as sent an account remembers for the errors that may answer them (§6.1).
SENT_REMEMBERED = 100


@dataclass
class _Copied:
    """Who got the sent copy of a remembered message, and so is to see an error answering it
    (§6.1): every enabled resource on this node (``here`` None) or those named, and the full
    JIDs of those on other nodes."""

    here: frozenset[JID] | None = frozenset()
    elsewhere: frozenset[str] = frozenset()


@dataclass
class CarbonsState:
    """Per session: whether it enabled carbons (XEP-0280 §4), and whether its output is watched
    for errors answering the messages it sent (§6.1)."""

    enabled: bool = False
    watched: bool = False


def _copied_at_all(stanza: Stanza) -> bool:
    """Never hinted private (§9, XEP-0334 §4.3), a carbon itself (§11), groupchat or an error."""
    el = stanza.el
    return all(el.find(tag) is None for tag in _NEVER_COPIED) and message_type(stanza) not in ("groupchat", "error")


def _instant_message(stanza: Stanza) -> bool:
    """What instant messaging sends (§6.1): chat, normal with a body, a receipt, chat state or marker."""
    el = stanza.el
    kind = message_type(stanza)
    if kind == "chat" or el.find(_DIRECT_INVITE) is not None:
        return True
    if kind == "normal" and el.find(qname(stanza.namespace, "body")) is not None:
        return True
    return any(split(child.tag)[0] in _IM_PAYLOADS for child in el)


def eligible(stanza: Stanza) -> bool:
    """Whether a message is copied to every enabled resource (XEP-0280 §6.1, §9, §11; see the
    module docstring). Never a private message through a group: see :func:`private_in_group`."""
    if not _copied_at_all(stanza):
        return False
    muc = stanza.el.find(_MUC_X)
    if muc is not None:
        return muc.find(_MUC_INVITE) is not None
    return _instant_message(stanza)


def invitation(stanza: Stanza) -> bool:
    """Whether a message to a group carries a mediated invitation (XEP-0045 §7.8.2), copied as sent."""
    muc = stanza.el.find(_MUC_X)
    return muc is not None and muc.find(_MUC_INVITE) is not None and _copied_at_all(stanza)


def private_in_group(stanza: Stanza, *, marked: bool = True) -> bool:
    """Whether a message is a private message through a group that is copied as sent, to the
    resources sharing the sender's nick (§6.1). Without ``marked``, the address said it is one
    (a group of this server); otherwise the ``<x xmlns='…muc#user'/>`` mark must say so."""
    if not _copied_at_all(stanza):
        return False
    muc = stanza.el.find(_MUC_X)
    if muc is None:
        return not marked and _instant_message(stanza)
    return muc.find(_MUC_INVITE) is None and _instant_message(stanza)


def nick_in(directed: Collection[JID], room: JID) -> frozenset[str]:
    """The occupant JIDs in ``room`` that a resource sent directed presence to (RFC 6121 §4.6): how
    a server that does not host the group tells which resources share a nick in it."""
    return frozenset(str(jid) for jid in directed if jid.bare == room)


def copy_of(stanza: Stanza, direction: Direction, account: JID, to: JID, *, in_group: bool = False) -> Element:
    """The carbon copy for resource ``to`` (XEP-0280 §7, §8); the original is not changed.

    The copy wraps a snapshot: the original goes on to be stamped for its recipient (its
    archive's stanza-id), and a queued carbon must not show that to the sender's devices.
    A private message through a group (``in_group``) gets the ``<x xmlns='…muc#user'/>`` mark
    its sender left out, so that the other devices tell it from a chat with a user (§6.1).
    """
    original = copy.deepcopy(stanza.el)
    if in_group and original.find(_MUC_X) is None:
        original.append(element(_MUC_X))
    carbon = Carbon(direction, Forwarded(original))
    return element(
        _MESSAGE,
        {"from": str(account), "to": str(to), "type": stanza.type},
        children=(carbon.to_xml(),),
    )


Scope = Literal["all", "nick"]


def sent_scope(server: Server, stanza: Stanza, account: JID) -> Scope | None:
    """Which resources of ``account`` get a message one of them sends as sent (XEP-0280 §8, §6.1):
    every other enabled one ("all"), those sharing the sender's nick in a group elsewhere ("nick"),
    or none. A private message to a group here is copied by the group once it passed it on
    (:data:`PRIVATE_SENT`); of other messages to a group here only invitations are copied, and
    nothing sent to the server's own services, to the server or to one's own account. An external
    component (XEP-0114) is a peer like another server: a gateway's users and groups talk as theirs."""
    to = stanza.to
    assert to is not None
    if to.bare == account:
        return None
    service = server.services.get(to.domain)
    if service is not None and service != SERVICE_OWNER:
        return "all" if service == Muc.name and to.resource is None and invitation(stanza) else None
    if eligible(stanza):
        return "all"
    if to.resource is not None and to.domain not in server.hosts and private_in_group(stanza):
        return "nick"
    return None


class Carbons(Module[Any]):
    """Copies a user's messages to all of their carbons-enabled resources (XEP-0280)."""

    name = "carbons"
    depends = ("message",)
    features = (NS, RULES)

    def setup(self) -> None:
        for tag in (ENABLE, DISABLE):
            self.iq("self", tag, set=self.toggle)
            self.iq("bare", tag, set=self.refuse)
        self.hook(DELIVERED, self.received)
        for target in ("bare", "full", "remote", "service"):
            self.route(f"pre-message/{target}", self.sent, priority=-100)
        self.hook(PRIVATE_SENT, self.sent_in_group)
        self.hook(PRIVATE_BOUNCED, self.bounced_in_group)
        self.hook(sasl2.BIND2_INLINE, self.bind2_feature)
        self.hook(sasl2.BIND2_ENABLE, self.bind2_enable)
        self.hook("session-changed", self.changed)
        self.hook("session-closed", self.closed)
        # Per account, oldest first: (id, recipient's bare JID) of the messages copied as sent, and
        # who got the copy.
        self._sent: dict[JID, OrderedDict[tuple[str, JID], _Copied]] = {}

    async def bind2_feature(self, stream: C2SStream) -> str:
        """XEP-0386 §2.1: carbons can be enabled within Bind 2."""
        return NS

    async def bind2_enable(self, session: Session, stream: C2SStream, bind: Bind, results: list[Element]) -> None:
        """XEP-0386 §2.2: an ``<enable/>`` inside Bind 2 enables carbons; it needs no answer."""
        if bind.find(ENABLE) is not None:
            session.slot(CarbonsState).enabled = True
            await self.server.hooks.fire_all("session-changed", session)

    async def toggle(self, stanza: Stanza, origin: Session | None) -> Element:
        """XEP-0280 §4, §5 and §10.1: enabling or disabling again is answered like the first time."""
        assert origin is not None, "the router uses the self target only for a session's stanzas"
        payload = stanza.payload
        assert payload is not None
        origin.slot(CarbonsState).enabled = Toggle.from_xml(payload).enable
        await self.server.hooks.fire_all("session-changed", origin)
        return stanza.result()

    async def refuse(self, stanza: Stanza, _origin: Session | None) -> NoReturn:
        """XEP-0280 §4.1, §5.1: nobody turns carbons on or off for another account."""
        raise StanzaError("not-allowed", "carbons are enabled by each client for itself")

    async def received(self, stanza: Stanza, delivered: Sequence[Session]) -> None:
        """XEP-0280 §7: copy a delivered message to the enabled resources that did not get it."""
        assert stanza.to is not None, "the message module delivers only addressed messages"
        account = stanza.to.bare
        # The resource that sent a message to its own account already has it.
        targets = [
            session
            for session in self._enabled(account)
            if session not in delivered and session.jid != stanza.from_
        ]
        if targets and eligible(stanza):
            for session in targets:
                session.send(copy_of(stanza, "received", account, session.jid))

    async def sent(self, stanza: Stanza, origin: Session | None) -> None:
        """XEP-0280 §8: copy a message a resource sends to the account's other enabled resources
        (§6.1: to those sharing the sender's nick, for a private message in a group elsewhere)."""
        assert origin is not None and stanza.to is not None, "pre-routes see addressed stanzas of a session"
        account = origin.jid.bare
        targets = [session for session in self._enabled(account) if session is not origin]
        scope = sent_scope(self.server, stanza, account) if targets else None
        if scope is None:
            return
        if scope == "nick":
            mine = nick_in(origin.slot(Directed).to, stanza.to.bare)
            targets = [session for session in targets if not mine.isdisjoint(map(str, session.slot(Directed).to))]
        if targets:
            for session in targets:
                session.send(copy_of(stanza, "sent", account, session.jid, in_group=scope == "nick"))
            self._remember(stanza, origin, account, None if scope == "all" else targets)

    async def sent_in_group(self, stanza: Stanza, sharing: Collection[JID]) -> frozenset[JID]:
        """§6.1: a group here passed on a private message; its sender's other enabled resources
        joined under the same nick (``sharing``) get it as sent. Returns those that got it here,
        whom the group remembers for an error answering the message."""
        sender = stanza.from_
        assert sender is not None, "a group learns who sends it a message"
        account = sender.bare
        targets = [session for session in self._enabled(account) if session.jid in sharing and session.jid != sender]
        if not targets or not private_in_group(stanza, marked=False):
            return frozenset()
        for session in targets:
            session.send(copy_of(stanza, "sent", account, session.jid, in_group=True))
        return frozenset(session.jid for session in targets)

    async def bounced_in_group(self, error: Stanza, copied: Collection[JID]) -> None:
        """§6.1: a group here passed back an error answering a private message; the resources that
        got the sent copy (``copied``), on any node, get the error as received."""
        assert error.to is not None, "a group passes an error back to the message's sender"
        account = error.to.bare
        cluster = self.server.cluster
        for full in copied:
            session = self.server.sessions.get(full)
            if session is None:
                if not cluster.bus.alone():
                    cluster.post(full, copy_of(error, "received", account, full))
            elif session in self._enabled(account):
                session.send(copy_of(error, "received", account, full))

    def _remember(self, stanza: Stanza, origin: Session, account: JID, targets: Sequence[Session] | None) -> None:
        """§6.1: keep who got the sent copy here (None: every enabled resource), for an error
        answering this message."""
        copied = self._copied(stanza, origin, account)
        if copied is not None:
            copied.here = None if targets is None else frozenset(each.jid for each in targets)

    def remember_elsewhere(self, stanza: Stanza, origin: Session, elsewhere: Collection[JID]) -> None:
        """§6.1: the resources on other nodes that got the sent copy of ``stanza``, which
        ``origin`` here sent, are to see an error answering it too (``cluster/carbons.py``)."""
        copied = self._copied(stanza, origin, origin.jid.bare)
        if copied is not None:
            copied.elsewhere = frozenset(map(str, elsewhere))

    def _copied(self, stanza: Stanza, origin: Session, account: JID) -> _Copied | None:
        """The record of who got the sent copy of ``stanza``, and the sender's output watched for
        an error answering it, since an error may come back by any path (a refusal goes straight
        to the sender); None when no error could say it answers this message (it has no id)."""
        assert stanza.to is not None
        if stanza.id is None:
            return None
        sent = self._sent.setdefault(account, OrderedDict())
        key = (stanza.id, stanza.to.bare)
        copied = sent.get(key)
        if copied is None:
            copied = sent[key] = _Copied()
            if len(sent) > SENT_REMEMBERED:
                sent.popitem(last=False)
        state = origin.slot(CarbonsState)
        if not state.watched:
            state.watched = True
            origin.add_output_stage(functools.partial(self._answered, origin), priority=200)
        return copied

    def _answered(self, origin: Session, el: Element, forward: Forward) -> None:
        """§6.1: an error answering a message that was copied as sent is copied as received."""
        if el.tag == _MESSAGE and el.get("type") == "error":
            self._copy_error(origin, el)
        forward(el)

    def _copy_error(self, origin: Session, el: Element) -> None:
        account = origin.jid.bare
        sent = self._sent.get(account)
        id_ = el.get("id")
        if sent is None or id_ is None:
            return
        try:
            from_ = JID.parse(el.get("from") or "")
        except JIDError:
            return
        try:
            copied = sent.pop((id_, from_.bare))
        except KeyError:
            return
        error = Stanza(el, origin.jid, from_)
        for session in self._enabled(account):
            if session is not origin and (copied.here is None or session.jid in copied.here):
                session.send(copy_of(error, "received", account, session.jid))
        for full in copied.elsewhere:
            to = JID.parse(full)
            self.server.cluster.post(to, copy_of(error, "received", account, to))

    async def changed(self, session: Session) -> None:
        """A resource that disabled carbons may have been the account's last enabled one (§6.1)."""
        self._forget(session.jid.bare, ())

    async def closed(self, session: Session) -> None:
        """A resource that ends may have been the account's last enabled one (§6.1)."""
        self._forget(session.jid.bare, (session,))

    def _forget(self, account: JID, leaving: tuple[Session, ...]) -> None:
        """Messages are remembered for an account only while it has carbons-enabled resources:
        here, or, for a message whose copy went to resources on other nodes, while it has a
        session here that an error answering it may reach."""
        sent = self._sent.get(account)
        if sent is None or not all(each in leaving for each in self._enabled(account)):
            return
        if any(each not in leaving for each in self.server.sessions.resources(account)):
            for key in [key for key, copied in sent.items() if not copied.elsewhere]:
                del sent[key]
            if sent:
                return
        del self._sent[account]

    def _enabled(self, account: JID) -> list[Session]:
        return [
            session
            for session in self.server.sessions.resources(account)
            if session.available and not session.closed and session.slot(CarbonsState).enabled
        ]
