"""XEP-0352: Client State Indication: an inactive client is sent only what matters now.

The feature is offered in the stream features once the client has authenticated (§4.1), and
inside XEP-0386 Bind 2, where an ``<inactive/>`` in the request starts the session inactive. After
``<inactive/>`` (§4.2) the session's output passes a stage (``session.add_output_stage``,
priority 100, so it sees each element before stream management counts it) that holds back what
can wait:

- presence updates (available and unavailable), of which only the latest per full JID of the
  sender is kept;
- messages carrying only a chat state (XEP-0085; besides hints, ids, a thread or a delay stamp),
  of which only the latest per conversation is kept; a message with a chat state that goes out
  at once drops the held one it supersedes; one that waits but has a payload of its own (a
  reaction, say) is held like any other stanza and supersedes nothing;
- every other stanza that is not urgent, e.g. PEP notifications (XEP-0163).

Urgent stanzas go out at once, after everything held (in order), so that the client's view of
its contacts stays consistent: every IQ (RFC 6120 §8.2.3: requests await answers), messages with
a body or subject (RFC 6121 §5.2.3, §5.2.4), with an end-to-end encrypted payload (XEP-0384 in
both namespaces, XEP-0373, XEP-0027), delivery receipts (XEP-0184 ``<received/>``), chat markers
(XEP-0333), call proposals and their answers (XEP-0353), group chat invitations (XEP-0045 §7.8,
XEP-0249), archive query results (XEP-0313) and error stanzas; presence subscription requests
and answers (RFC 6121 §3), a group chat's presence about the user's own occupant (XEP-0045
§7.2.3, status 110), which ends a join. Carbons (XEP-0280) are judged by the message they carry.
Nonzas (stream management's ``<r/>`` and ``<a/>``) speak of the stream, not of what is held, and
pass untouched.

``<active/>`` sends what was held, in order, and holding stops; as §5.1 requires, this happens
before the client's next element is processed. Past ``max_held`` stanzas or
``max_held_bytes`` bytes held, everything held is sent. What was held carries a XEP-0203 delay
stamp from the server's domain with the time it was held back, unless it already has one.

A stanza held and then superseded, or a presence or chat state still held when the session
ends (the client's next session learns the current presence anyway), is never sent: the module
counts these per session, stanzas and bytes as serialized on a TCP stream, and logs the totals
when the session ends. Other stanzas still held then go on to the stages after this one, as if
sent at that moment, so that stream management accounts for them like for anything in flight.

Each stream begins active (§4.2), also one that a session is resumed on (§5.2, XEP-0198): the
first stanza for the session after a resumption finds the stream changed and releases what was
held before it. An ``<inactive/>`` before resource binding, when there is no session yet, leaves
the stream active (§5: clients make no assumptions about what the server does).
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.payloads import csi as payload
from ...xmpp.payloads.bind2 import Bind
from ...xmpp.payloads.muc import OCCUPANT_ID_NS
from ...xmpp.xml import element, qname, serialize, split
from .. import sasl2
from ..config import bounded
from ..hooks import HANDLED, Handled
from ..module import Module
from .e2e import ENCRYPTED
from .offline import delay_stamp

if TYPE_CHECKING:
    from ..c2s import C2SStream
    from ..sessions import Forward, Session

log = logging.getLogger(__name__)

_CHAT_STATES = "http://jabber.org/protocol/chatstates"
_RECEIPTS = "urn:xmpp:receipts"
_MARKERS = "urn:xmpp:chat-markers:0"
_JINGLE_MESSAGE = "urn:xmpp:jingle-message:0"
_CARBONS = "urn:xmpp:carbons:2"
_FORWARD = "urn:xmpp:forward:0"
_MAM_PREFIX = "urn:xmpp:mam:"
_MUC_USER = "http://jabber.org/protocol/muc#user"
_CONFERENCE = "jabber:x:conference"
_DELAY = qname(ns.DELAY, "delay")
# What may ride along with a chat state without being content of its own: processing hints,
# ids, delay stamps, a room's occupant id and the marker of a private message in a room.
_ALONGSIDE = frozenset({_CHAT_STATES, "urn:xmpp:hints", ns.SID, ns.DELAY, OCCUPANT_ID_NS, _MUC_USER})
_STANZA_NAMESPACES = frozenset({ns.CLIENT, ns.SERVER})
_URGENT_PAYLOADS = ENCRYPTED | {
    qname(_RECEIPTS, "received"),
    qname(_MARKERS, "received"),
    qname(_MARKERS, "displayed"),
    qname(_MARKERS, "acknowledged"),
    qname(_CONFERENCE, "x"),
}
_MUC_INVITE = f"{{{_MUC_USER}}}invite"
_MUC_SELF = f"{{{_MUC_USER}}}x/{{{_MUC_USER}}}status[@code='110']"
_CARBON_PATHS = tuple(
    (role, f"{{{_CARBONS}}}{role}/{{{_FORWARD}}}forwarded/{{{ns.CLIENT}}}message")
    for role in ("sent", "received")
)

# Held stanzas under the same key supersede each other: ("presence", "", sender) and
# ("chat-state", carbon role, peer). Other held stanzas get a number of their own.
Key = tuple[str, str, str]


@dataclass(frozen=True)
class CsiOptions:
    """How much an inactive session may have held back before all of it is sent."""

    max_held: int = bounded(100, min=1, max=10_000, help="stanzas held per inactive session")
    max_held_bytes: int = bounded(
        262_144, min=1_024, max=16 * 1024 * 1024, help="bytes held per inactive session"
    )


@dataclass(frozen=True)
class Saved:
    """What an inactive session was never sent: superseded, or still held when it ended."""

    stanzas: int
    bytes: int


def classify(el: Element) -> tuple[bool, Key | None]:
    """Whether stanza ``el`` must reach an inactive client at once, and the key of what it supersedes."""
    kind = split(el.tag)[1]
    if kind == "presence":
        if el.get("type") not in (None, "unavailable") or el.find(_MUC_SELF) is not None:
            return True, None
        return False, ("presence", "", el.get("from", ""))
    if kind != "message":
        return True, None
    if el.get("type") == "error" or any((split(child.tag)[0] or "").startswith(_MAM_PREFIX) for child in el):
        return True, None
    message, role = el, ""
    for carbon_role, path in _CARBON_PATHS:
        inner = el.find(path)
        if inner is not None:
            message, role = inner, carbon_role
            break
    message_ns = split(message.tag)[0] or ns.CLIENT
    content = {qname(message_ns, name) for name in ("body", "subject")}
    thread = qname(message_ns, "thread")
    urgent = chat_state = other = False
    for child in message:
        tag = child.tag
        child_ns = split(tag)[0]
        if child_ns == _CHAT_STATES:
            chat_state = True
        elif (
            tag in content
            or tag in _URGENT_PAYLOADS
            or child_ns == _JINGLE_MESSAGE
            or (child_ns == _MUC_USER and child.find(_MUC_INVITE) is not None)
        ):
            urgent = True
        elif tag != thread and child_ns not in _ALONGSIDE:
            other = True
    # Held with a payload beside its chat state (a reaction, say), it is content: never superseded.
    if not chat_state or (other and not urgent):
        return urgent, None
    # A conversation is the peer's address: the recipient of what the user's other device sent.
    peer = message.get("to" if role == "sent" else "from", "")
    return urgent, ("chat-state", role, peer)


@dataclass(slots=True)
class _Held:
    el: Element
    size: int
    since: float


class _Holder:
    """The output stage of a session that used client state indication."""

    def __init__(self, session: Session, stream: C2SStream, options: CsiOptions) -> None:
        self.session = session
        # The stream that said <inactive/>: §5.2, a stream the session is resumed on begins active.
        self.stream = stream
        self.max_held = options.max_held
        self.max_bytes = options.max_held_bytes
        self.inactive = False
        self.held: dict[Key | int, _Held] = {}
        self.held_bytes = 0
        self.saved_stanzas = 0
        self.saved_bytes = 0
        self._numbers = itertools.count()

    def __call__(self, el: Element, forward: Forward) -> None:
        if self.inactive and self.session.transport is not self.stream:
            self.inactive = False
            for held in self.take():
                forward(held)
        if not self.inactive or split(el.tag)[0] not in _STANZA_NAMESPACES:
            forward(el)
            return
        urgent, key = classify(el)
        if urgent:
            if key is not None:
                self.forget(key)
            for held in self.take():
                forward(held)
            forward(el)
            return
        self._hold(el, key)
        if len(self.held) > self.max_held or self.held_bytes > self.max_bytes:
            for held in self.take():
                forward(held)

    def _hold(self, el: Element, key: Key | None) -> None:
        size = len(serialize(el, ns.CLIENT).encode())
        if key is None:
            slot: Key | int = next(self._numbers)
        else:
            # Dropped and added anew, so that the newer stanza takes its place after what came between.
            self.forget(key)
            slot = key
        self.held[slot] = _Held(el, size, time.time())
        self.held_bytes += size

    def forget(self, key: Key) -> None:
        """Drop the stanza held under ``key``, if any: the client will never need it."""
        old = self.held.pop(key, None)
        if old is not None:
            self.held_bytes -= old.size
            self.saved_stanzas += 1
            self.saved_bytes += old.size

    def take(self) -> list[Element]:
        """Everything held, in order, each stamped with the time it was held (XEP-0203 §3)."""
        held, self.held, self.held_bytes = self.held, {}, 0
        return [self._stamped(entry) for entry in held.values()]

    def _stamped(self, entry: _Held) -> Element:
        el = entry.el
        if el.find(_DELAY) is not None:
            return el
        delay = element(
            _DELAY,
            {"from": self.session.host, "stamp": delay_stamp(datetime.fromtimestamp(entry.since, UTC))},
        )
        # A copy: the same element may be on its way to other sessions.
        return element(el.tag, el.attrib, el.text, [*el, delay])


@dataclass
class _Slot:
    holder: _Holder | None = None


class ClientStateIndication(Module[CsiOptions]):
    """Holds back presence, chat states and other stanzas that can wait from inactive clients."""

    name = "csi"
    Options = CsiOptions

    def setup(self) -> None:
        self.nonza(payload.INACTIVE, self.inactive)
        self.nonza(payload.ACTIVE, self.active)
        self.hook("stream-features", self.stream_feature)
        # Before stream management's handler, which must find what is released here among the
        # stanzas in flight.
        self.hook("session-closed", self.session_closed, priority=100)
        self.hook(sasl2.BIND2_INLINE, self.bind2_feature)
        self.hook(sasl2.BIND2_ENABLE, self.bind2_enable)

    async def bind2_feature(self, stream: C2SStream) -> str:
        """XEP-0386 §2.1: the client state can be set within Bind 2."""
        return payload.NS

    async def bind2_enable(self, session: Session, stream: C2SStream, bind: Bind, results: list[Element]) -> None:
        """XEP-0386 §2.2: an ``<inactive/>`` inside Bind 2 starts the session inactive."""
        request = bind.find(payload.INACTIVE)
        if request is not None:
            await self.inactive(stream, request)

    async def stream_feature(self, stream: C2SStream) -> Element | None:
        """§4.1: offered once the client has authenticated."""
        return element(payload.FEATURE) if stream.authenticated else None

    async def inactive(self, stream: C2SStream, _el: Element) -> Handled:
        """§4.2: from now on, hold back what can wait."""
        session = stream.session
        if session is not None:
            slot = session.slot(_Slot)
            if slot.holder is None:
                slot.holder = _Holder(session, stream, self.options)
                session.add_output_stage(slot.holder, priority=100)
            slot.holder.stream = stream
            slot.holder.inactive = True
        return HANDLED

    async def active(self, stream: C2SStream, _el: Element) -> Handled:
        """§4.2, §5.1: send what was held, in order, before the client's next element is processed."""
        session = stream.session
        holder = session.slot(_Slot).holder if session is not None else None
        if session is not None and holder is not None and holder.inactive:
            holder.inactive = False
            self._release(session, holder)
        return HANDLED

    async def session_closed(self, session: Session) -> None:
        """Drop the presence and chat states still held, pass the rest on, log what was saved."""
        holder = session.slot(_Slot).holder
        if holder is None:
            return
        holder.inactive = False
        for key in [key for key in holder.held if isinstance(key, tuple)]:
            holder.forget(key)
        self._release(session, holder)
        log.info(
            "client state indication spared %s %d stanzas (%d bytes)",
            session.jid,
            holder.saved_stanzas,
            holder.saved_bytes,
        )

    def saved(self, session: Session) -> Saved:
        """What ``session`` was spared so far."""
        holder = session.slot(_Slot).holder
        return Saved(holder.saved_stanzas, holder.saved_bytes) if holder is not None else Saved(0, 0)

    @staticmethod
    def _release(session: Session, holder: _Holder) -> None:
        # Through the whole chain again (this stage now lets everything pass): a stage added
        # after this one, such as stream management's, must see each stanza.
        for el in holder.take():
            session.send(el)
