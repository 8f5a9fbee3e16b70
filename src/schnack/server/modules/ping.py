"""XEP-0199: XMPP Ping, answered by the server for its domains and for accounts' bare JIDs
(service-unavailable for an account that does not exist, RFC 6121 §8.5.1)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.stanza import Stanza
from ...xmpp.xml import qname
from ..module import Module

if TYPE_CHECKING:
    from ..sessions import Session


class Ping(Module[Any]):
    """Answers pings (XEP-0199 §4.2, §4.3)."""

    name = "ping"
    features = (ns.PING,)
    account_features = (ns.PING,)

    def setup(self) -> None:
        tag = qname(ns.PING, "ping")
        for target in ("host", "self"):
            self.iq(target, tag, get=self.pong)
        self.iq("bare", tag, get=self.pong_for_account)

    async def pong(self, stanza: Stanza, _origin: Session | None) -> Element:
        return stanza.result()

    async def pong_for_account(self, stanza: Stanza, _origin: Session | None) -> Element:
        """A ping to an account's bare JID, answered for it; RFC 6121 §8.5.1: one that does not
        exist gets service-unavailable."""
        assert stanza.to is not None and stanza.to.local is not None
        if await self.server.storage.accounts.get(stanza.to.domain, stanza.to.local) is None:
            raise StanzaError("service-unavailable")
        return stanza.result()
