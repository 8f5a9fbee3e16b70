"""Finding the server and holding one connection to it: DNS SRV, TCP, TLS, the negotiated stream.

RFC 6120 §3.2 and XEP-0368: the ``_xmpps-client._tcp`` (direct TLS) and ``_xmpp-client._tcp``
(STARTTLS) records of the domain are tried in RFC 2782 order; without records, the domain itself
on port 5222. This is the only module of the client that touches sockets; the protocol is the
sans-IO :class:`~schnack.xmpp.negotiation.ClientStream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from ..dns import srv_records
from ..xmpp.errors import StreamError
from ..xmpp.jid import JID
from ..xmpp.negotiation import (
    AuthenticationFailed,
    ClientStream,
    Closed,
    Event,
    FastToken,
    NegotiationError,
    Ready,
    Received,
    TlsRequested,
)
from ..xmpp.payloads.sasl2 import UserAgent
from ..xmpp.payloads.sm import Enable, Enabled, Failed, Resume, Resumed
from ..xmpp.srv import no_service, srv_names, srv_order
from . import tls
from .errors import AuthenticationError, ConnectError

log = logging.getLogger(__name__)

_READ_SIZE = 65536
# How long held-back input may wait for more bytes before it is parsed anyway (StreamParser.flush).
_FLUSH_DELAY = 0.05
STARTTLS_PORT = 5222
DIRECT_TLS_PORT = 5223
_ERRNO = re.compile(r"\[Errno (\d+)\]")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One place to try: host, port and whether TLS starts with the first byte."""

    host: str
    port: int
    direct_tls: bool


async def endpoints(domain: str, *, host: str | None, port: int | None, direct_tls: bool | None,
                    dns_servers: Sequence[str] | None = None) -> list[Endpoint]:
    """Where to try to connect, in order.

    A given ``host`` is used as is (port 5223 for direct TLS, else 5222 unless given). Otherwise
    the SRV records decide; ``direct_tls`` True or False keeps only that kind. A single record
    with the target "." says the service is not offered there (RFC 6120 §3.2.1).
    """
    if host is not None:
        return [Endpoint(host, port or (DIRECT_TLS_PORT if direct_tls else STARTTLS_PORT), bool(direct_tls))]
    records = await srv_records(srv_names(domain, "client", direct_tls), dns_servers)
    if no_service(records):
        raise ConnectError(f"{domain} says in DNS that it offers no XMPP service")
    if records:
        return [Endpoint(r.target, r.port, r.direct_tls) for r in srv_order(records) if r.target]
    return [Endpoint(domain, port or (DIRECT_TLS_PORT if direct_tls else STARTTLS_PORT), bool(direct_tls))]


class Link:
    """One connection with its negotiated stream; it ends for good when the connection does."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: ClientStream,
                 endpoint: Endpoint) -> None:
        self.reader = reader
        self.writer = writer
        self.stream = stream
        self.endpoint = endpoint
        # Whether the server sent anything at all: a direct TLS port sent a stream header in the
        # clear drops the connection without a word.
        self._heard = False
        self.jid: JID | None = None
        self.features: Element | None = None
        # The answer to a requested resumption (XEP-0198 §5), if one was requested.
        self.resumption: Resumed | Failed | None = None
        # The answer to the stream management <enable/> sent inside Bind 2 (XEP-0386), if sent.
        self.enabled: Enabled | Failed | None = None
        # How often the login, once on TLS, sent something and then waited for the server.
        self.round_trips = 0
        self._written = False
        self.pending: list[Element] = []
        # Why this side dropped the connection, if it did.
        self.dropped: str | None = None

    @classmethod
    async def open(cls, account: JID, password: str, *, resource: str | None, verify: tls.Verify,
                   endpoints: Sequence[Endpoint], timeout: float, resume: Resume | None = None,
                   user_agent: UserAgent | None = None, token: FastToken | None = None,
                   known_features: Element | None = None, tag: str | None = None,
                   enable: Enable | None = None) -> Link:
        """Connect to the first endpoint that answers, secure it, log in and bind (or resume).

        With ``user_agent`` the login uses SASL2 where offered (see :class:`ClientStream` for
        ``token``, ``known_features``, ``tag`` and ``enable``).
        """
        failures: list[tuple[Endpoint, str]] = []
        for endpoint in endpoints:
            try:
                async with asyncio.timeout(timeout):
                    reader, writer = await _connect(endpoint, account.domain, verify)
            except (OSError, TimeoutError) as err:
                failures.append((endpoint, _reason(err)))
                continue
            stream = ClientStream(account, password, resource=resource, secure=endpoint.direct_tls,
                                  channel_bindings=tls.channel_bindings(writer.get_extra_info("ssl_object")),
                                  resume=resume, user_agent=user_agent, token=token, known_features=known_features,
                                  tag=tag, enable=enable)
            link = cls(reader, writer, stream, endpoint)
            try:
                async with asyncio.timeout(timeout):
                    await link._negotiate(verify)
            except TimeoutError:
                link.abort()
                raise ConnectError(f"{account.domain}: the login took longer than {timeout:g} s") from None
            except BaseException:
                link.abort()
                raise
            return link
        if len(failures) == 1:
            ((endpoint, reason),) = failures
            raise ConnectError(f"cannot reach {account.domain} ({endpoint.host} port {endpoint.port}): {reason}")
        tried = "; ".join(f"{endpoint.host} port {endpoint.port}: {reason}" for endpoint, reason in failures)
        raise ConnectError(f"cannot reach {account.domain}: {tried}")

    async def _negotiate(self, verify: tls.Verify) -> None:
        stream = self.stream
        domain = stream.account.domain
        stream.start()
        self._flush_output()
        try:
            while True:
                events = await self._read_events()
                self._flush_output()
                # Stanzas that came right behind the bind result wait for the reader in ``pending``.
                for event in events:
                    if isinstance(event, TlsRequested):
                        await self.writer.drain()
                        self._behind_proceed()
                        try:
                            await self.writer.start_tls(tls.context(verify, direct_tls=False), server_hostname=domain)
                        except ssl.SSLCertVerificationError as err:
                            raise tls.verification_failure(domain, err) from None
                        stream.tls_established(tls.channel_bindings(self.writer.get_extra_info("ssl_object")))
                    elif isinstance(event, Ready):
                        self.jid, self.features, self.resumption = event.jid, event.features, event.resumption
                        self.enabled = event.enabled
                    elif isinstance(event, Received):
                        self.pending.append(event.element)
                    elif isinstance(event, Closed):
                        why = f": {event.condition}" if event.condition else ""
                        detail = f" ({event.text})" if event.text else ""
                        raise ConnectError(f"{domain} closed the stream during login{why}{detail}")
                    self._flush_output()
                if self.jid is not None:
                    return
        except AuthenticationFailed as err:
            raise AuthenticationError(f"{stream.account}: {err.text}", err.condition) from None
        except NegotiationError as err:
            raise ConnectError(f"{domain}: {err.text}") from None
        except StreamError as err:
            stream.close(err)
            self._flush_output()
            raise ConnectError(f"{domain} broke the protocol during login: {err}") from None
        except (OSError, ssl.SSLError) as err:
            hint = ""
            if not self._heard and not self.endpoint.direct_tls:
                hint = f" without a word (if port {self.endpoint.port} is for direct TLS, try direct_tls=True)"
            raise ConnectError(f"{domain}: the connection failed during login: {_reason(err)}{hint}") from None

    def _behind_proceed(self) -> None:
        """Hand the stream what arrived on the plain connection after the read that brought
        ``<proceed/>``: it refuses all but whitespace (RFC 6120 §5.4.3.3). Left in the reader, it
        would be read after the handshake as if it came over TLS. From the start of TLS on, what
        arrives goes to TLS: no await may come between this and ``start_tls``."""
        # asyncio's StreamReader has no public way to take what it holds without waiting for more.
        unread: bytearray = self.reader._buffer  # type: ignore[attr-defined]
        data = bytes(unread)
        unread.clear()
        if data:
            self.stream.receive(data)

    async def _read_events(self) -> list[Event]:
        if self._written and self.stream.secure and self.jid is None:
            self.round_trips += 1
        self._written = False
        if self.stream.buffered():
            try:
                data = await asyncio.wait_for(self.reader.read(_READ_SIZE), _FLUSH_DELAY)
            except TimeoutError:
                return self.stream.flush()
        else:
            data = await self.reader.read(_READ_SIZE)
        if not data:
            raise ConnectionResetError("the server closed the connection")
        self._heard = True
        return self.stream.receive(data)

    async def elements(self) -> AsyncIterator[Element]:
        """The elements the server sends, until its stream ends; a dropped connection raises OSError.

        A stream error from the server ends the iteration with :class:`StreamError` raised, so
        that the caller can tell a deliberate end from a lost connection.
        """
        pending, self.pending = self.pending, []
        for el in pending:
            yield el
        while True:
            try:
                events = await self._read_events()
            except StreamError as err:
                self.stream.close(err)
                self._flush_output()
                raise
            self._flush_output()
            for event in events:
                if isinstance(event, Received):
                    yield event.element
                elif isinstance(event, Closed):
                    if event.condition is not None:
                        raise StreamError(event.condition, event.text)
                    return

    def send(self, el: Element) -> None:
        """Queue a stanza for writing."""
        self.stream.send(el)
        self._flush_output()

    async def drain(self) -> None:
        """Wait until the transport has taken what was written (flow control)."""
        await self.writer.drain()

    def _flush_output(self) -> None:
        data = self.stream.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)
            self._written = True

    async def close(self, timeout: float, received: Callable[[Element], None] | None = None) -> None:
        """Close the stream politely (RFC 6120 §4.4) and wait a little for the server's end;
        ``received`` gets what the server sends until then."""
        if not self.writer.is_closing():
            self.stream.close()
            self._flush_output()
            with contextlib.suppress(OSError, TimeoutError, StreamError, ssl.SSLError):
                async with asyncio.timeout(timeout):
                    async for el in self.elements():
                        if received is not None:
                            received(el)
        self.abort()

    def fail(self, error: StreamError) -> None:
        """End the stream with ``error`` because the server broke the protocol (RFC 6120 §4.9),
        and drop the connection once the error is written."""
        if self.dropped is None:
            self.dropped = f"the server broke the protocol: {error}"
        self.stream.close(error)
        self._flush_output()
        # Not abort(): that would discard the stream error still in the write buffer.
        self.writer.transport.close()

    def abort(self, reason: str | None = None) -> None:
        """Drop the connection at once."""
        if reason is not None and self.dropped is None:
            self.dropped = reason
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()


async def _connect(endpoint: Endpoint, domain: str, verify: tls.Verify
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if not endpoint.direct_tls:
        return await asyncio.open_connection(endpoint.host, endpoint.port, limit=_READ_SIZE)
    try:
        return await asyncio.open_connection(
            endpoint.host, endpoint.port, ssl=tls.context(verify, direct_tls=True), server_hostname=domain,
            limit=_READ_SIZE,
        )
    except ssl.SSLCertVerificationError as err:
        raise tls.verification_failure(domain, err) from None


def _reason(err: BaseException) -> str:
    """Why a connection failed, in words: the errno's text, not asyncio's "Connect call failed"."""
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, ssl.SSLError):
        if err.reason == "WRONG_VERSION_NUMBER":
            # What came back was no TLS record: a port that starts in the clear, for STARTTLS.
            return "it does not speak direct TLS (try direct_tls=False)"
        return err.strerror or str(err)  # its errno is OpenSSL's, not the system's
    if isinstance(err, socket.gaierror):
        # The resolver's EAI_* codes are no errno: os.strerror would call them "unknown error".
        return (err.strerror or str(err)).lower()
    if isinstance(err, OSError):
        # asyncio folds the failures of a host's several addresses into one message without an
        # errno; one reason shared by all of them is still that reason.
        codes = {err.errno} if err.errno else {int(code) for code in _ERRNO.findall(str(err))}
        if len(codes) == 1:
            return os.strerror(codes.pop()).lower()
        if err.strerror:
            return err.strerror
    return str(err) or type(err).__name__

