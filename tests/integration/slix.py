"""slixmpp, the independent test peer, set up for the test server; it records what happened to it."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any
from xml.etree.ElementTree import Element

from slixmpp import JID, ClientXMPP
from slixmpp.features.feature_mechanisms.stanza import Auth
from slixmpp.stanza import StreamFeatures

from schnack.server.app import Server

PASSWORD = "correct horse battery staple"


class SlixClient:
    """A slixmpp client on one of the server's TCP listeners.

    It keeps the ``<auth/>`` it sent (mechanism and initial response), the SASL failures and stream
    errors it got, the stream features, and the messages that reached it.
    """

    def __init__(self, server: Server, jid: str, password: str = PASSWORD, *, listener: str = "c2s",
                 mechanism: str | None = None, tls_max: ssl.TLSVersion | None = None,
                 address: tuple[str, int] | None = None) -> None:
        self.server = server
        self.listener = listener
        # Where to connect when not to the listener itself (a balancer in front of it).
        self.address = address
        self.xmpp = ClientXMPP(jid, password, sasl_mech=mechanism)
        self.xmpp.register_plugin("xep_0199")
        ctx = self.xmpp.ssl_context
        # The test server's certificate is self-signed.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if tls_max is not None:
            ctx.maximum_version = tls_max
        # slixmpp tries direct TLS and then STARTTLS on the same port; try only what the test means.
        self.xmpp.enable_direct_tls = listener == "c2s_tls"
        self.xmpp.enable_starttls = listener == "c2s"
        self.auths: list[tuple[str, bytes]] = []
        self.failures: list[str] = []
        self.stream_errors: list[str] = []
        self.features: list[Element] = []
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.started = asyncio.Event()
        self.failed = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.xmpp.add_filter("out", self._outgoing)
        self.xmpp.add_filter("in", self._incoming)
        self.xmpp.add_event_handler("session_start", lambda _: self.started.set())
        self.xmpp.add_event_handler("failed_all_auth", lambda _: self.failed.set())
        self.xmpp.add_event_handler("failed_auth", lambda s: self.failures.append(s["condition"]))
        self.xmpp.add_event_handler("stream_error", lambda e: self.stream_errors.append(e["condition"]))
        self.xmpp.add_event_handler("disconnected", lambda _: self.disconnected.set())
        self.xmpp.add_event_handler("message", self.messages.put_nowait)

    def _outgoing(self, stanza: Any) -> Any:
        if isinstance(stanza, Auth):
            self.auths.append((stanza["mechanism"], stanza["value"]))
        return stanza

    def _incoming(self, stanza: Any) -> Any:
        if isinstance(stanza, StreamFeatures):
            self.features.append(stanza.xml)
        return stanza

    async def start(self) -> bool:
        """Connect and log in; False when authentication failed."""
        host, port = self.address or self.server.bound[self.listener][0]
        self.xmpp.connect(host, port)
        started = asyncio.ensure_future(self.started.wait())
        failed = asyncio.ensure_future(self.failed.wait())
        async with asyncio.timeout(30):
            await asyncio.wait({started, failed}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        failed.cancel()
        return self.started.is_set()

    def tls_version(self) -> str | None:
        sock = self.xmpp.socket
        return sock.version() if isinstance(sock, ssl.SSLObject | ssl.SSLSocket) else None

    def send(self, to: str, body: str, id: str) -> None:
        """A chat message to ``to`` (a full JID: routing to a bare JID depends on presence)."""
        msg = self.xmpp.make_message(mto=JID(to), mbody=body, mtype="chat")
        msg["id"] = id
        msg.send()

    async def next_message(self, timeout: float = 30) -> Any:
        async with asyncio.timeout(timeout):
            return await self.messages.get()

    async def sync(self) -> None:
        """Everything sent before on this stream has been routed once the server answers a ping."""
        await self.xmpp.plugin["xep_0199"].send_ping(JID("localhost"), timeout=30)

    async def stop(self) -> None:
        await self.xmpp.disconnect()
