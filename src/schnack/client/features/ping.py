"""XEP-0199: answer the server's pings, and ping it to find a link that died silently.

A connection can vanish without a FIN or RST (a phone that changed networks, a NAT that forgot
the mapping); TCP then notices only after many minutes. A ping every ``interval`` seconds that
gets no answer within the next interval drops the link, and the client reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname
from ..errors import NotConnected, RequestTimeout, XmppError

if TYPE_CHECKING:
    from ..client import Client
    from ..net import Link

PING = qname(ns.PING, "ping")


class Ping:
    """Pings in both directions."""

    def __init__(self, client: Client) -> None:
        self.client = client
        client.handle_iq("get", PING, self._pong)

    @staticmethod
    def _pong(_stanza: Stanza) -> Element | None:
        """XEP-0199 §4.1: an empty result."""
        return None

    async def ping(self, to: str | None = None, *, timeout: float | None = None) -> None:
        """Ping ``to`` (the server by default); an error reply still proves the link works."""
        target = to or self.client.account.domain
        with contextlib.suppress(XmppError):
            await self.client.iq(element(qname(ns.CLIENT, "iq"), {"type": "get", "to": target},
                                         children=[element(PING)]), timeout=timeout)

    async def keepalive(self, link: Link, interval: float) -> None:
        """Ping the server every ``interval`` seconds; drop ``link`` if one goes unanswered."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.ping(timeout=interval)
            except RequestTimeout:
                link.abort(f"no answer to a ping for {interval:g} s")
                return
            except NotConnected:
                return
