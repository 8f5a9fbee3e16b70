"""The persistent outbox: a message is on disk before it is sent, and stays until the server
acknowledged it (XEP-0198 §4), however often the link or the process dies in between.

Every message gets an origin-id (XEP-0359 §3), which is also its 'id', so that a copy sent again
is recognised as the same message by the receiver, which keeps only the first (see
:meth:`~.store.Store.receive`). The outbox is sent, oldest first, once stream management is set
up on a new session, which also happens at start-up: all of it then, including what an earlier
session had sent without an acknowledgement, also when resumption failed (slixmpp drops those).
After a resumption the stream sends its unacknowledged stanzas again itself, and the outbox only
what was not on that stream yet. Nothing may hold back the messages behind it: text that XML
cannot carry is refused before it is stored, and a stored stanza that does not parse any more is
marked failed.

Messages that mean something only while this client runs (call signalling, XEP-0353) go the same
way but are held in memory (:meth:`Outbox.send_volatile`): a reconnect does not lose them, and a
restart does not send them long after the call is over. The answers to messages that arrived
(receipts, XEP-0184) are stored with those messages (:meth:`~.store.Store.receive`), and the
marker that a conversation was read (XEP-0333) with its new state (:meth:`~.store.Store.mark`);
they go the stored way too, after the messages we wrote: a client killed after it stored a
message, or marked it read, still tells the sender at the next start. One sent just before the
process died may go twice; it names the message it answers, so the second changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ..xmpp import ns
from ..xmpp.jid import JID
from ..xmpp.xml import qname, sub
from .errors import ClientError, NotConnected, RequestTimeout, XmppError
from .store import FAILED, STATES, Store

if TYPE_CHECKING:
    from .client import Client
    from .features.sm import StreamManagement

log = logging.getLogger(__name__)

ORIGIN_ID = qname(ns.SID, "origin-id")
STANZA_ID = qname(ns.SID, "stanza-id")
_ACKED = STATES.index("acked")
# What XML 1.0 §2.2 does not allow in a document.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def message_ids(el: Element, account: JID) -> tuple[str | None, str | None]:
    """A message's origin-id, and the stanza-id our own server gave it (XEP-0359 §8: a stanza-id
    counts only from an entity we trust to assign it, and only our server assigns ours). Only
    the message's own children count (§3): one nested deeper is the sender's, which our server
    leaves alone, and would make the message look like a copy of the one that has that id."""
    origin = el.find(ORIGIN_ID)
    stanza_id = next((s.get("id") for s in el.findall(STANZA_ID) if s.get("by") == str(account.bare)), None)
    return (origin.get("id") if origin is not None else None), stanza_id or None


class Outbox:
    """The messages the server has not acknowledged, for one client."""

    def __init__(self, client: Client, sm: StreamManagement, store: Store) -> None:
        self.client = client
        self.store = store
        self._sm = sm
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        # The volatile messages not acknowledged yet, by origin-id, oldest first.
        self._volatile: dict[str, Element] = {}
        # The origin-ids of stored answers written on a link and not acknowledged yet.
        self._answering: set[str] = set()
        sm.on_acknowledged(self._acknowledged)
        client.on_connect(self._on_connect)

    def send(self, el: Element, peer: JID, text: str, *, encrypted: bool, replaces: str | None = None) -> str:
        """Give the message ``el`` an origin-id, store it with ``text`` (a correction of our message
        ``replaces``, if given), and send it as soon as it may go; the origin-id is returned.
        Text that XML cannot carry raises ClientError, and nothing is stored."""
        check_text(text)
        origin_id = identify(el)
        self.store.queue(peer, text, origin_id, el, encrypted=encrypted, replaces=replaces)
        self.flush()
        return origin_id

    def send_volatile(self, el: Element) -> str:
        """Give the message ``el`` an origin-id and send it as soon as it may go, again after each
        reconnect until the server acknowledged it, for as long as this client runs; it is not
        stored. The origin-id is returned."""
        origin_id = identify(el)
        self._volatile[origin_id] = el
        self.flush()
        return origin_id

    async def _on_connect(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Send, oldest first, what is stored and not on the link yet; nothing while stream
        management is being set up on a new session."""
        if not self._sm.ready:
            return
        on_link = self._sm.in_flight()
        for entry in self.store.outbox():
            if entry.origin_id in on_link:
                continue
            if not self.client.write(entry.stanza):
                return
            self.store.advance(entry.origin_id, "sent")
        for entry in self.store.answers():
            if entry.origin_id in on_link:
                continue
            if not self.client.write(entry.stanza):
                return
            self._answering.add(entry.origin_id)
        for origin_id, el in list(self._volatile.items()):
            if origin_id not in on_link and not self.client.write(el):
                return

    async def wait(self, origin_id: str, timeout: float) -> None:
        """Wait until the server acknowledged the message; an error reply to it raises XmppError."""
        message = self.store.sent_message(origin_id)
        if message is None:
            raise KeyError(origin_id)
        if message.state == FAILED:
            raise XmppError(message.error or "undefined-condition", message.error_text)
        if STATES.index(message.state) >= _ACKED:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(origin_id, []).append(future)
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            raise RequestTimeout(
                f"the server has not acknowledged the message within {timeout:g} s; it stays in the outbox"
            ) from None
        finally:
            waiting = self._waiters.get(origin_id, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self._waiters.pop(origin_id, None)

    def refused(self, origin_id: str, error: XmppError) -> bool:
        """An error reply to a message we sent: it is marked failed and not sent again. True if
        it was a stored message (one of the conversation), False if it was volatile or unknown."""
        self._volatile.pop(origin_id, None)
        if self._answered(origin_id):
            return False
        if not self.store.fail(origin_id, error.condition, error.text):
            return False
        for future in self._waiters.pop(origin_id, []):
            if not future.done():
                future.set_exception(error)
        return True

    def stop(self, reason: str) -> None:
        """The client stopped: whoever waits hears why; the messages stay stored for the next
        start, and the volatile ones are dropped."""
        self._volatile.clear()
        for waiting in self._waiters.values():
            for future in waiting:
                if not future.done():
                    future.set_exception(NotConnected(f"{reason}; the message stays in the outbox"))
        self._waiters.clear()

    def _acknowledged(self, el: Element) -> None:
        origin = el.find(ORIGIN_ID)
        origin_id = origin.get("id") if origin is not None else None
        if origin_id is None:
            return
        if self._volatile.pop(origin_id, None) is not None or self._answered(origin_id):
            return
        self.store.advance(origin_id, "acked")
        for future in self._waiters.pop(origin_id, []):
            if not future.done():
                future.set_result(None)

    def _answered(self, origin_id: str) -> bool:
        """Whether ``origin_id`` is a stored answer on the link; if so, it is done with."""
        if origin_id not in self._answering:
            return False
        self._answering.discard(origin_id)
        self.store.answered(origin_id)
        return True


def check_text(text: str, what: str = "the text", outcome: str = "nothing was sent") -> None:
    """XML 1.0 §2.2: a document holds only the characters of the Char production. A message
    with any other (a terminal's escape sequence pasted in) could never be sent, so it is
    refused (ClientError) before it is stored; so is any other text of ours (``what``), which
    would make the server close the stream (RFC 6120 §4.9.3.13)."""
    found = _NOT_XML.search(text)
    if found is not None:
        raise ClientError(f"{what} holds the character U+{ord(found.group()):04X}, which XML cannot carry; {outcome}")


def identify(el: Element) -> str:
    """Give a message a new origin-id, which is also its 'id' (XEP-0359 §3); return it."""
    origin_id = str(uuid.uuid4())
    el.set("id", origin_id)
    sub(el, ORIGIN_ID, {"id": origin_id})
    return origin_id
