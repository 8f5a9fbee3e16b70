"""IQ routing to other entities (RFC 6121 §8.5.3, §8.5.2.1.3, RFC 6120 §10.5.3).

An IQ get/set for a full JID goes to that resource; if it is not connected the sender gets
service-unavailable. Results and errors go to the resource they answer. IQs that reach a bare
JID of an account are answered by the server on its behalf, by whichever module handles their
payload; what no module handles gets service-unavailable from the router.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from ...xmpp.errors import StanzaError
from ...xmpp.stanza import Stanza
from ..hooks import HANDLED, Handled
from ..module import Module

if TYPE_CHECKING:
    from ..sessions import Session


class Iq(Module[Any]):
    """Delivers IQs between resources."""

    name = "iq"

    def setup(self) -> None:
        self.route("iq/full", self.to_full, priority=-100)

    async def to_full(self, stanza: Stanza, _origin: Session | None) -> Element | Handled | None:
        assert stanza.to is not None
        session = self.server.sessions.get(stanza.to)
        if session is None:
            if stanza.type in ("get", "set"):
                raise StanzaError("service-unavailable", "that resource is not connected")
            return HANDLED
        session.send(stanza.el)
        return HANDLED
