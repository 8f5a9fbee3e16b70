"""One bare connection for the compliance checks: our client's link, and nothing done on top.

The checks look at what a server offers and answers, so they must not be helped by what
:class:`~schnack.client.Client` does after a login (stream management, carbons, OMEMO keys
published to the account, an archive catch-up): a :class:`Session` is the negotiated
:class:`~schnack.client.net.Link` (TLS, SASL or SASL2, binding) with a reader that matches iq
replies to requests, keeps the messages that arrive for the checks to look through, answers
the server's roster pushes and pings (RFC 6121 §2.1.6, XEP-0199 §4.1) and, once a check enabled
stream management, its acknowledgement requests (XEP-0198 §4).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
from collections.abc import Callable
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError, StreamError
from ...xmpp.jid import JID, JIDError
from ...xmpp.payloads.sm import ACK, ENABLED, FAILED, REQUEST, Ack, Enable, Enabled
from ...xmpp.payloads.sm import NS as SM_NS
from ...xmpp.xml import element, qname, serialize, sub
from ..net import Link

_IQ = qname(ns.CLIENT, "iq")
_MESSAGE = qname(ns.CLIENT, "message")
_PRESENCE = qname(ns.CLIENT, "presence")
_ANSWERED = (qname(ns.ROSTER, "query"), qname(ns.PING, "ping"))
_HINTS = "urn:xmpp:hints"
_FORWARDED = qname("urn:xmpp:forward:0", "forwarded")
# Enough for every check's messages; older ones are dropped so a long run cannot grow without end.
_KEPT_MESSAGES = 500


def show(el: Element | None, limit: int = 600) -> str | None:
    """An element as XML text for a report, cut at ``limit`` characters."""
    if el is None:
        return None
    text = serialize(el, ns.CLIENT)
    return text if len(text) <= limit else f"{text[:limit]}…"


class CheckFailed(Exception):
    """The server's behaviour fails a check: why, what was sent and what came back."""

    def __init__(self, reason: str, sent: Element | str | None = None, received: Element | str | None = None
                 ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent if isinstance(sent, str) else show(sent)
        self.received = received if isinstance(received, str) else show(received)


class Refused(CheckFailed):
    """An iq answered with an error (RFC 6120 §8.3); ``condition`` and ``reply`` say which."""

    def __init__(self, sent: Element, reply: Element) -> None:
        error = reply.find(qname(ns.CLIENT, "error"))
        parsed = StanzaError.from_xml(error) if error is not None else StanzaError("undefined-condition")
        target = sent.get("to") or "the account"
        detail = f" ({parsed.text})" if parsed.text else ""
        super().__init__(f"{target} answered {parsed.condition}{detail}", sent, reply)
        self.condition = parsed.condition
        self.reply = reply


class Session:
    """A logged-in, bound stream of one account, read in a task of its own."""

    def __init__(self, link: Link, timeout: float) -> None:
        assert link.jid is not None and link.features is not None
        self.link = link
        self.jid: JID = link.jid
        # The stream features offered after authentication (RFC 6120 §4.3.2).
        self.features: Element = link.features
        self.timeout = timeout
        self.messages: list[Element] = []
        self.presences: list[Element] = []
        self.nonzas: asyncio.Queue[Element] = asyncio.Queue()
        self.lost: str | None = None
        # XEP-0198 §4: stanzas handled since stream management was enabled; None while it is off.
        self.handled: int | None = None
        self._arrived = asyncio.Event()
        self._waiters: dict[str, asyncio.Future[Element]] = {}
        self._reader = asyncio.create_task(self._read())

    @property
    def account(self) -> JID:
        return self.jid.bare

    async def _read(self) -> None:
        try:
            async for el in self.link.elements():
                self._dispatch(el)
            self.lost = "the server closed the stream"
        except StreamError as err:
            self.lost = f"the server ended the stream with {err.condition}"
        except OSError as err:
            self.lost = f"the connection was lost ({err.strerror or err})"
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(CheckFailed(f"{self.lost} while waiting for an answer"))
        self._arrived.set()

    def _dispatch(self, el: Element) -> None:
        if el.tag in (_IQ, _MESSAGE, _PRESENCE) and self.handled is not None:
            self.handled += 1
        if el.tag == _IQ:
            self._on_iq(el)
        elif el.tag == _MESSAGE:
            self.messages.append(el)
            del self.messages[:-_KEPT_MESSAGES]
            self._arrived.set()
        elif el.tag == _PRESENCE:
            self.presences.append(el)
            del self.presences[:-_KEPT_MESSAGES]
            self._arrived.set()
        elif el.tag == REQUEST and self.handled is not None:
            self.link.send(Ack(self.handled).to_xml())
        elif el.tag.startswith(f"{{{SM_NS}}}"):
            self.nonzas.put_nowait(el)

    def _on_iq(self, el: Element) -> None:
        kind = el.get("type")
        if kind in ("result", "error"):
            future = self._waiters.get(el.get("id") or "")
            if future is not None and not future.done():
                future.set_result(el)
            return
        if kind not in ("get", "set"):
            return
        reply = element(_IQ, {"type": "result", "id": el.get("id"), "to": el.get("from")})
        if len(el) != 1 or el[0].tag not in _ANSWERED:
            reply.set("type", "error")
            reply.append(StanzaError("service-unavailable").to_xml())
        self.send(reply)

    def send(self, el: Element) -> None:
        """Send a stanza or nonza as it is."""
        if self.lost is not None:
            raise CheckFailed(f"cannot send: {self.lost}", el)
        self.link.send(el)

    async def iq(self, kind: str, payload: Element, to: JID | str | None = None, *,
                 timeout: float | None = None) -> Element:
        """Send an iq ``get`` or ``set`` and return the result; an error reply raises :class:`Refused`."""
        request = element(_IQ, {"type": kind, "id": secrets.token_hex(6), "to": None if to is None else str(to)},
                          children=[payload])
        future: asyncio.Future[Element] = asyncio.get_running_loop().create_future()
        request_id = request.get("id", "")
        self._waiters[request_id] = future
        wait = timeout if timeout is not None else self.timeout
        try:
            self.send(request)
            async with asyncio.timeout(wait):
                reply = await future
        except TimeoutError:
            raise CheckFailed(f"no answer from {to or 'the server'} within {wait:g} s", request) from None
        finally:
            self._waiters.pop(request_id, None)
        if reply.get("type") == "error":
            raise Refused(request, reply)
        return reply

    async def message(self, match: Callable[[Element], bool], what: str, *, timeout: float | None = None,
                      sent: Element | None = None) -> Element:
        """The first message (arrived or arriving) that ``match`` accepts; :class:`CheckFailed`
        naming ``what`` was awaited when none comes in time."""
        return await self._first(self.messages, match, what, timeout, sent)

    async def presence(self, match: Callable[[Element], bool], what: str, *, timeout: float | None = None,
                       sent: Element | None = None) -> Element:
        """The first presence that ``match`` accepts, as :meth:`message`."""
        return await self._first(self.presences, match, what, timeout, sent)

    async def _first(self, kept: list[Element], match: Callable[[Element], bool], what: str,
                     timeout: float | None, sent: Element | None) -> Element:
        wait = timeout if timeout is not None else self.timeout
        try:
            async with asyncio.timeout(wait):
                while True:
                    found = next((el for el in kept if match(el)), None)
                    if found is not None:
                        return found
                    if self.lost is not None:
                        raise CheckFailed(f"{self.lost} while waiting for {what}", sent)
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            raise CheckFailed(f"{what} did not arrive within {wait:g} s", sent) from None

    async def enable_sm(self) -> Enabled:
        """XEP-0198 §3: turn stream management on, asking for resumption."""
        request = Enable(resume=True).to_xml()
        self.send(request)
        answer = await self.nonza("the answer to <enable/>", sent=request)
        if answer.tag == FAILED:
            raise CheckFailed("the server refused to enable stream management", request, answer)
        if answer.tag != ENABLED:
            raise CheckFailed(f"expected <enabled/>, got {answer.tag}", request, answer)
        self.handled = 0
        return Enabled.from_xml(answer)

    async def nonza(self, what: str, *, sent: Element | None = None) -> Element:
        """The next stream management element from the server."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self.nonzas.get()
        except TimeoutError:
            raise CheckFailed(f"{what} did not arrive within {self.timeout:g} s", sent) from None

    async def request_ack(self) -> int:
        """XEP-0198 §4: ask for the server's count of handled stanzas and return it."""
        request = element(REQUEST)
        self.send(request)
        answer = await self.nonza("an answer <a/> to <r/>", sent=request)
        if answer.tag != ACK:
            raise CheckFailed(f"expected <a/>, got {answer.tag}", request, answer)
        return Ack.from_xml(answer).h

    def abort(self) -> None:
        """Drop the connection without closing the stream, as a phone losing its network does."""
        self._reader.cancel()
        self.link.abort()

    async def close(self) -> None:
        """Close the stream politely (RFC 6120 §4.4)."""
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.link.close(timeout=2.0)


def probe(to: JID | str, text: str, kind: str = "chat") -> Element:
    """A test message with ``text`` as its body, shaped as the OMEMO messages apps send (an
    ``<encrypted/>`` payload, here of random bytes, with the body as fallback text): a server
    that requires end-to-end encryption handles it as it handles theirs, and stores, copies and
    archives it as it does any message with a body."""
    message = element(_MESSAGE, {"to": str(to), "type": kind, "id": secrets.token_hex(8)})
    encrypted = sub(message, qname(ns.OMEMO_LEGACY, "encrypted"))
    header = sub(encrypted, qname(ns.OMEMO_LEGACY, "header"), {"sid": str(secrets.randbelow(2**31 - 1) + 1)})
    sub(header, qname(ns.OMEMO_LEGACY, "iv"), text=base64.b64encode(secrets.token_bytes(12)).decode())
    sub(encrypted, qname(ns.OMEMO_LEGACY, "payload"), text=base64.b64encode(secrets.token_bytes(32)).decode())
    sub(message, qname(ns.CLIENT, "body"), text=text)
    sub(message, qname(_HINTS, "store"))
    return message


def carried_body(el: Element, wrapper: str) -> str | None:
    """The body of the message a carbon or archive result (``wrapper``) forwards (XEP-0297)."""
    found = el.find(f"{wrapper}/{_FORWARDED}/{_MESSAGE}")
    return body(found) if found is not None else None


def sender(el: Element) -> JID | None:
    """The 'from' of a stanza, or None when it is missing or not a JID."""
    raw = el.get("from")
    if raw is None:
        return None
    try:
        return JID.parse(raw)
    except JIDError:
        return None


def body(el: Element) -> str | None:
    """The text of a message's body, if it has one."""
    return el.findtext(qname(ns.CLIENT, "body"))

