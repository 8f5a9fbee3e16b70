"""XEP-0198: Stream Management (v1.6) from the client's side: acks both ways, and resumption.

After each new login, before anything else, the client asks for stream management with
resumption (§3) and from then on numbers the stanzas it sends, keeping each until the server's
``<a h='…'/>`` covers it (§4). It asks for an ack (``<r/>``) right after every message, so that
a message counts as acknowledged as soon as the server has handled it, and answers the server's
``<r/>`` with the number of stanzas it handled itself, counted once their handlers ran. A handler
may hold its stanza (an OMEMO message, chat or group, until it is decrypted and stored; a group
invitation until its group is entered): the count then stops before it, since ``h`` counts the
stanzas in order, until it is released; an ``<r/>`` answered meanwhile is answered again,
unasked, once nothing is held. A resumption asks for what the count does not cover again, and
the message pipelines drop the copies of what they stored meanwhile.

When the link drops, the next login asks to resume the session (§5): the stanzas the server's
``h`` does not cover are sent again on the resumed stream. When resumption fails, those the
``h`` in ``<failed/>`` covers still count as acknowledged, and the session starts afresh; the
messages among the rest are sent again from the persistent outbox (outbox.py), not dropped.
An ``h`` above what was sent, in an ack or a resumption, ends the stream with the
undefined-condition error of §4; the unacknowledged messages stay in the outbox. Acks that arrive
while the client closes its stream, up to the server's end of it, still count; other stanzas
that arrive then are not handled.

A server that does not offer stream management still acknowledges messages: RFC 6120 §10.1 makes
it handle a client's stanzas in order, so the answer to a ping (XEP-0199) sent after them says
that it handled them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.payloads.sm import (
    ACK,
    ENABLED,
    FAILED,
    FEATURE,
    MODULUS,
    REQUEST,
    Ack,
    Enable,
    Enabled,
    Failed,
    HandledCountError,
    Request,
    Resume,
    Resumed,
    SmError,
    newly_acknowledged,
)
from ...xmpp.xml import element, qname
from ..errors import ClientError, ConnectError, RequestTimeout, XmppError
from .ping import PING

if TYPE_CHECKING:
    from ..client import Client
    from ..net import Link

log = logging.getLogger(__name__)

_MESSAGE = qname(ns.CLIENT, "message")
_ORIGIN_ID = qname(ns.SID, "origin-id")
# Unacknowledged stanzas after which an ack is asked for even without a message among them.
_ASK_AFTER = 5

Acknowledged = Callable[[Element], None]


class StreamManagement:
    """The client's side of XEP-0198 for one account, across its links."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.id: str | None = None
        self.enabled = False
        # Whether messages may go out on the current link: stream management is on, or known to be
        # unavailable (then pings confirm them). Until then the outbox holds them back.
        self.ready = False
        self.resumptions = 0
        self._link: Link | None = None
        self._counting = False
        self._handled = 0
        # Stanzas counted, also those still held; the held ones in the order they came.
        self._received = 0
        self._held: deque[_Held] = deque()
        self._holding: _Held | None = None
        self._short = False
        self._sent = 0
        self._queue: deque[Element] = deque()
        self._answer: asyncio.Future[None] | None = None
        self._confirming: asyncio.Task[None] | None = None
        self._listeners: list[Acknowledged] = []
        client.on_connect(self._enable)

    @property
    def handled(self) -> int:
        """How many of the server's stanzas were handled since stream management was enabled (§4)."""
        return self._handled

    @property
    def unacknowledged(self) -> int:
        """How many sent stanzas wait for the server's acknowledgement."""
        return len(self._queue)

    def on_acknowledged(self, listener: Acknowledged) -> None:
        """Call ``listener`` with every stanza the server acknowledged, in the order sent."""
        self._listeners.append(listener)

    def in_flight(self) -> set[str]:
        """The origin-ids of the messages sent and not acknowledged yet."""
        found = set()
        for el in self._queue:
            origin = el.find(_ORIGIN_ID)
            if origin is not None and origin.get("id"):
                found.add(origin.get("id", ""))
        return found

    # The life of a link --------------------------------------------------------------------

    def inline_request(self) -> Enable:
        """XEP-0386: what to ask for inside Bind 2 when the login starts a new session."""
        return Enable(resume=True)

    def resumption(self) -> Resume | None:
        """What to ask for at the next login: resuming the session, if it may be (§5)."""
        if self.id is None:
            return None
        # From here on what the server sends again is counted afresh; what is still held is
        # among it.
        self._received = self._handled
        self._held.clear()
        return Resume(self._handled, self.id)

    def start(self, link: Link) -> bool:
        """A new link is logged in: True if it resumed the session (then the stanzas the server
        did not handle are sent again), False if the session is new. A resumption whose ``h``
        is above what was sent ends the link (§4) and raises ConnectError."""
        self._link = link
        answer = link.resumption
        if isinstance(answer, Resumed):
            self.resumptions += 1
            if not self._acknowledge(answer.h):
                self._miscounted(link, answer.h)
                # A session whose counts went wrong is not resumed again: the next login starts
                # a new one, and the outbox sends what was not acknowledged.
                self.id = None
                raise ConnectError(f"{self.client.account.domain} resumed the session with a wrong count")
            unacknowledged = list(self._queue)
            self._queue.clear()
            self._sent = answer.h
            for el in unacknowledged:
                self.send(link, el)
            self.ready = True
            return True
        if isinstance(answer, Failed):
            log.info("the session could not be resumed (%s); starting a new one", answer.condition)
            if answer.h is not None and not self._acknowledge(answer.h):
                # The new session is not at fault; all of the old one's is sent again instead.
                log.warning("the server counted %d stanzas of the old session, but %d were sent", answer.h,
                            self._sent)
        self.id = None
        self.enabled = self.ready = self._counting = self._short = False
        self._handled = self._received = self._sent = 0
        self._held.clear()
        self._queue.clear()
        return False

    async def _enable(self) -> None:
        """§3: the first step after a new login; waits for the server's answer."""
        link = self._link
        assert link is not None
        if link.enabled is not None:
            # XEP-0386: enabled (or refused) inside Bind 2, counting from the binding on.
            self._counting = True
            self._answered(link.enabled)
            self.ready = True
            self._confirm()
            return
        if link.features is None or link.features.find(FEATURE) is None:
            self.ready = True
            return
        self._answer = asyncio.get_running_loop().create_future()
        # §4: the stanzas are counted from the <enable/> on, as the server counts them.
        self._counting = True
        link.send(Enable(resume=True).to_xml())
        await link.drain()
        try:
            async with asyncio.timeout(self.client.timeout):
                await self._answer
        except TimeoutError:
            raise RequestTimeout(f"{self.client.account.domain} did not answer the request for stream management"
                                 ) from None
        finally:
            self._answer = None
        self.ready = True
        self._confirm()

    def _answered(self, answer: Enabled | Failed) -> None:
        """The answer to ``<enable/>``, taken at once: the server's stanzas right behind it count."""
        if isinstance(answer, Enabled):
            self.enabled = True
            self.id = answer.id if answer.resume else None
        else:
            log.info("the server refused stream management (%s)", answer.condition)
            self._counting = False
            self._handled = self._received = self._sent = 0
            self._held.clear()
            # What was counted in anticipation: only the messages still need confirming (by ping).
            self._queue = deque(el for el in self._queue if _confirmable(el))

    # Sending and receiving ----------------------------------------------------------------

    def send(self, link: Link, el: Element) -> None:
        """Write a stanza on ``link`` and keep it until it is acknowledged."""
        link.send(el)
        if self._counting:
            self._queue.append(el)
            self._sent = (self._sent + 1) % MODULUS
            if el.tag == _MESSAGE or len(self._queue) >= _ASK_AFTER:
                link.send(Request().to_xml())
        elif _confirmable(el):
            self._queue.append(el)
            if self.ready:
                self._confirm()

    def hold(self) -> Callable[[], None]:
        """Keep the stanza whose handlers run now out of ``h`` until the function returned is called."""
        held = self._holding = _Held()
        return lambda: self._release(held)

    def stanza_handled(self) -> None:
        """A stanza from the server went through its handlers (§4: that is what ``h`` counts)."""
        held, self._holding = self._holding, None
        if not self.enabled:
            return
        self._received = (self._received + 1) % MODULUS
        if held is not None and not held.done:
            held.number = self._received
            self._held.append(held)
        self._count()

    def _release(self, held: _Held) -> None:
        held.done = True
        self._count()
        link = self._link
        if self._short and not self._held and self.enabled and link is not None and link.stream.ready:
            # §4: an ack may come unasked; this one covers what an earlier answer could not.
            self._short = False
            link.send(Ack(self._handled).to_xml())

    def _count(self) -> None:
        """``h``: the stanzas handled in order, up to the first still held."""
        while self._held and self._held[0].done:
            self._held.popleft()
        self._handled = (self._held[0].number - 1) % MODULUS if self._held else self._received

    def nonza(self, el: Element) -> bool:
        """Handle a stream management element from the server; False if it is none."""
        link = self._link
        if link is None:
            return False
        try:
            if el.tag == REQUEST:
                if self.enabled:
                    link.send(Ack(self._handled).to_xml())
                    self._short = bool(self._held)
            elif el.tag == ACK:
                h = Ack.from_xml(el).h
                if self.enabled and not self._acknowledge(h):
                    self._miscounted(link, h)
            elif el.tag in (ENABLED, FAILED):
                if self._answer is not None and not self._answer.done():
                    self._answered(Enabled.from_xml(el) if el.tag == ENABLED else Failed.from_xml(el))
                    self._answer.set_result(None)
            else:
                return False
        except SmError as err:
            link.abort(f"the server sent a broken stream management element: {err}")
        return True

    def closing(self, el: Element) -> None:
        """What arrives while the client closes its stream: an ack still removes what it covers
        from the outbox (§4), and nothing is answered on a stream already closed."""
        if el.tag == ACK:
            self.nonza(el)

    def _acknowledge(self, h: int) -> bool:
        """The server handled our stanzas up to ``h``: tell the listeners about the new ones.
        False, and nothing acknowledged, if ``h`` is above what was sent."""
        count = newly_acknowledged(h, self._sent, len(self._queue))
        if count is None:
            return False
        for _ in range(count):
            self._acknowledged(self._queue.popleft())
        return True

    def _miscounted(self, link: Link, h: int) -> None:
        """§4: an ``h`` above what was sent is an undefined-condition stream error carrying
        ``<handled-count-too-high/>``; what waits for an acknowledgement stays queued."""
        link.fail(HandledCountError(h, self._sent))

    def _acknowledged(self, el: Element) -> None:
        for listener in self._listeners:
            try:
                listener(el)
            except Exception:
                log.exception("failed to handle an acknowledgement")

    # Without stream management ------------------------------------------------------------

    def _confirm(self) -> None:
        if not self._counting and self._queue and (self._confirming is None or self._confirming.done()):
            self._confirming = asyncio.ensure_future(self._confirm_sent())

    async def _confirm_sent(self) -> None:
        """Ping the server until the messages sent before each ping are confirmed."""
        while self._queue and not self._counting:
            link, count = self._link, len(self._queue)
            ping = element(qname(ns.CLIENT, "iq"), {"type": "get", "to": self.client.account.domain},
                           children=[element(PING)])
            try:
                with contextlib.suppress(XmppError):
                    await self.client.iq(ping)
            except ClientError:
                # No answer on this link; a new one sends the outbox again.
                return
            if link is not self._link:
                return
            for _ in range(min(count, len(self._queue))):
                self._acknowledged(self._queue.popleft())


@dataclass
class _Held:
    """A stanza kept out of ``h``: its number in the count, once counted, and whether released."""

    number: int = 0
    done: bool = False


def _confirmable(el: Element) -> bool:
    return el.tag == _MESSAGE and el.find(_ORIGIN_ID) is not None
