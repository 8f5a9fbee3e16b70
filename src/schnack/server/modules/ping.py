"""XEP-0199: XMPP Ping, answered by the server for its domains and for accounts' bare JIDs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from ...xmpp import ns
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
        for target in ("host", "self", "bare"):
            self.iq(target, tag, get=self.pong)

    async def pong(self, stanza: Stanza, _origin: Session | None) -> Element:
        return stanza.result()
