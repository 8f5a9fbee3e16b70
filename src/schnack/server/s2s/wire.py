"""One server-to-server connection on a socket: bytes out, parsed stream events in (RFC 6120 §4).

Both directions use it: the outgoing side awaits the next event during negotiation, the
incoming side reads events in a loop. Stanzas travel in ``jabber:server`` on the wire and in
``jabber:client`` inside the server, as every stanza does there; the conversion happens here.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import cast
from xml.etree.ElementTree import Element
from xml.sax.saxutils import quoteattr

from ...xmpp import ns
from ...xmpp.errors import StreamError
from ...xmpp.parser import Event, StreamParser
from ...xmpp.xml import WHITESPACE, serialize
from ..config import Limits
from ..gather import Gathered
from .dialback import NS as DIALBACK

log = logging.getLogger(__name__)

_READ_SIZE = 65536
# How long held-back input may wait for more bytes before it is parsed anyway (StreamParser.flush).
_FLUSH_DELAY = 0.05
# How long closing may take before the connection is cut (a peer that never answers close_notify).
_CLOSE_GRACE = 2.0
_SERVER_PREFIX = f"{{{ns.SERVER}}}"


def header(from_: str | None, to: str | None, stream_id: str | None = None) -> str:
    """The stream header (RFC 6120 §4.7), declaring the dialback namespace (XEP-0220 §2.1.1)."""
    attrs = "".join(f" {name}={quoteattr(value)}" for name, value in (("from", from_), ("to", to), ("id", stream_id))
                    if value is not None)
    return (f"<?xml version='1.0'?><stream:stream xmlns='{ns.SERVER}' xmlns:stream='{ns.STREAMS}' "
            f"xmlns:db='{DIALBACK}'{attrs} version='1.0'>")


def to_client_namespace(el: Element) -> None:
    """A stanza read from another server, in ``jabber:server``, as the server keeps it."""
    for each in el.iter():
        if each.tag.startswith(_SERVER_PREFIX):
            each.tag = f"{{{ns.CLIENT}}}{each.tag[len(_SERVER_PREFIX):]}"


class _AfterWhitespace(ssl.SSLObject):
    """A TLS connection that skips whitespace before the peer's first TLS record
    (:func:`starttls_context`)."""

    incoming: ssl.MemoryBIO
    _begun = False

    def do_handshake(self) -> None:
        if not self._begun:
            # A memory BIO cannot be peeked at: all it holds is read, and what follows the
            # whitespace is written back, into the BIO that is empty now.
            rest = self.incoming.read().lstrip(WHITESPACE)
            if rest:
                self._begun = True
                self.incoming.write(rest)
        super().do_handshake()


class _StartTLSContext(ssl.SSLContext):
    sslobject_class = _AfterWhitespace

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, server_side: bool = False,
                 server_hostname: str | bytes | None = None, session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        obj = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        assert isinstance(obj, _AfterWhitespace)
        obj.incoming = incoming
        return obj


def starttls_context(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """``ctx``, whose handshakes skip whitespace the peer sent before its first TLS record.

    RFC 6120 §5.4.3.3 has TLS begin with the bytes right after ``<proceed/>``, but a peer's
    whitespace keepalive (§4.6.1) fires on a timer: the receiving server's may write one after
    its ``<proceed/>``, the initiating server's one after its ``<starttls/>``. What arrives
    before TLS starts here is checked and dropped by :meth:`Wire.start_tls`; what arrives once
    the handshake began is read by asyncio's TLS layer, where OpenSSL would take it for the
    start of a record and fail the handshake. No TLS record starts with a whitespace byte, so
    skipping it there is unambiguous (the client streams' TLS does the same, server/link.py);
    anything else is left to TLS, which fails on plaintext (CVE-2011-0411). Only the handshake
    does this: what comes after it is read as ever. Outgoing direct TLS (XEP-0368) shares the
    contexts; a peer there sends no whitespace, and nothing changes for it.
    """
    # The ssl module makes the context (create_default_context chooses its settings) and
    # offers no way to make it of a subclass; the subclass adds no state, only wrap_bio.
    ctx.__class__ = _StartTLSContext
    return ctx


class Wire:
    """A TCP connection (plain until STARTTLS, or TLS from the start) with its stream parser."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: Limits,
                 *, secure: bool = False) -> None:
        self.reader = reader
        self.writer = writer
        self.secure = secure
        self.limits = limits
        self.stanza_limit = limits.max_stanza_size
        self.parser = StreamParser(self.stanza_limit)
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.last_read = self.last_write = time.monotonic()
        self.closing = False
        # From the moment the peer may take our next bytes for TLS records (our <proceed/> went
        # out, or theirs came in) until TLS is up: nothing may be written in the clear then.
        self.handshaking = False
        self._events: list[Event] = []
        self._out = Gathered(self._hand_over)

    def set_stanza_limit(self, size: int) -> None:
        """RFC 6120 §13.12: bound each stanza to ``size`` bytes from now on."""
        self.stanza_limit = self.parser.max_stanza_bytes = size

    def write(self, data: str) -> None:
        """Queue ``data``; what is written in one turn of the event loop goes out together
        (server/gather.py)."""
        if not self.closing:
            self.last_write = time.monotonic()
            self._out.add(data)

    def flush(self) -> None:
        """Hand what was written to the transport now."""
        self._out.flush()

    def _hand_over(self, data: str) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(data.encode())
        if self.writer.transport.get_write_buffer_size() > self.limits.max_write_buffer:
            # A peer that does not read what it is sent would make us hold it all.
            log.warning("cutting s2s connection %s: it does not read what it is sent", self.peer)
            self.closing = True
            self.writer.transport.abort()

    def send(self, el: Element) -> None:
        """Write a stanza or nonza; a jabber:client stanza goes out in the stream's jabber:server."""
        self.write(serialize(el, ns.CLIENT if el.tag.startswith(f"{{{ns.CLIENT}}}") else ns.SERVER))

    async def next_event(self, timeout: float) -> Event | None:
        """The next stream event; None when the connection ended. Raises TimeoutError, StreamError."""
        async with asyncio.timeout(timeout):
            while not self._events:
                if self.parser.buffered():
                    try:
                        async with asyncio.timeout(_FLUSH_DELAY):
                            data = await self.reader.read(_READ_SIZE)
                    except TimeoutError:
                        self._events = self.parser.flush()
                        continue
                else:
                    data = await self.reader.read(_READ_SIZE)
                if not data:
                    return None
                self.last_read = time.monotonic()
                self._events = self.parser.feed(data)
        return self._events.pop(0)

    async def start_tls(self, context: ssl.SSLContext, server_hostname: str | None = None) -> None:
        """RFC 6120 §5.4.3.3: TLS on the open connection, then a new stream (and parser).

        Called right after ``<starttls/>`` was read and ``<proceed/>`` written (not sent yet), or
        after ``<proceed/>`` was read. Either way the peer now waits for us, so input behind that
        element came in the clear and would otherwise be read as if it came over TLS (the
        injection of CVE-2011-0411): it raises StreamError policy-violation, before TLS. Only
        whitespace is let pass: it may come between top-level elements (§11.7; a keepalive, a
        newline), carries nothing, and is dropped. Whitespace that arrives once the handshake
        began is skipped by the handshake of a :func:`starttls_context`.

        The input is checked twice. First with ``<proceed/>`` unsent: refused then, it is never
        sent. Then after ``drain()``, which waits while the peer does not read what was sent
        before, as the last step before TLS: input may arrive meanwhile. Refused then, the
        ``<proceed/>`` is out, and the stream error and closing tag follow it in the clear: a
        peer that already began its handshake gets them where it expects the server's first
        TLS record, and its handshake fails.
        """
        if not self._only_whitespace_behind():
            # The <proceed/> (incoming) is the last write; what came before it in this turn (our
            # header and features, for a peer that sent its header along) still goes.
            self._out.drop_last()
            raise _injected()
        self.flush()
        self.handshaking = True
        try:
            await self.writer.drain()
            if not self._only_whitespace_behind():
                # The refusal is to follow the <proceed/> in the clear (see above).
                self.handshaking = False
                raise _injected()
            # No await between the check and here: from now on input stays in the socket until
            # TLS reads it. StreamWriter.start_tls awaits drain() once more before asyncio's
            # start_tls stops reading, and that would wait again if more was written meanwhile.
            cast(asyncio.Transport, self.writer.transport).pause_reading()
            await self.writer.start_tls(context, server_hostname=server_hostname)
        finally:
            self.handshaking = False
        self.secure = True
        self.restart()

    def _only_whitespace_behind(self) -> bool:
        """Whether the input behind the last element, parsed or still in the reader, is only
        whitespace; that whitespace is dropped."""
        unread = self._unread()
        if self._events or not self.parser.only_whitespace_after_last_element() or unread.strip():
            return False
        unread.clear()
        return True

    def _unread(self) -> bytearray:
        """The bytes the reader received and :meth:`next_event` did not read yet."""
        # asyncio's StreamReader has no public way to tell without waiting for them.
        buffer: bytearray = self.reader._buffer  # type: ignore[attr-defined]
        return buffer

    def restart(self) -> None:
        """RFC 6120 §4.3.3: after TLS or SASL success a new stream starts; older input is discarded."""
        self.parser.close()
        self.parser = StreamParser(self.stanza_limit)
        self._events = []

    def close_with(self, error: StreamError | None = None) -> None:
        """Send a stream error if given and close our stream (RFC 6120 §4.4, §4.9).

        While the TLS handshake is under way (:attr:`handshaking`) nothing is written: the peer
        reads our next bytes as TLS records (§5.4.3.3), and plaintext there would only fail its
        handshake. The stream is marked closing, and the connection goes once the handshake
        ends or :meth:`aclose` cuts it; the stream after TLS, which would carry the error, has
        no header of ours yet.
        """
        if self.closing:
            return
        if self.handshaking:
            self.closing = True
            return
        if error is not None:
            self.write(serialize(error.to_xml(), ns.SERVER))
        self.write("</stream:stream>")
        self.closing = True

    async def aclose(self) -> None:
        """Close the connection; what was written still goes out first, within a grace period."""
        self.closing = True
        self.flush()
        if not self.writer.is_closing():
            self.writer.close()
        try:
            async with asyncio.timeout(_CLOSE_GRACE):
                await self.writer.wait_closed()
        except Exception:  # timed out, or the connection broke: nothing more can be sent anyway
            self.writer.transport.abort()


def _injected() -> StreamError:
    return StreamError("policy-violation", "input came in the clear behind the STARTTLS exchange")
