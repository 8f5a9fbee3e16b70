"""XEP-0280: Message Carbons (v1.0, ``urn:xmpp:carbons:2``) from the client's side.

Carbons are enabled after every new login (§4), before presence is announced, so that what
our other devices send and get from then on is copied here; a server without carbons leaves
the client working without them. A copy is taken only from our own bare JID (§11: anyone else
could forge one); messages.py unwraps it with :func:`unwrap`, and a sent copy is stored as our
own outgoing message, a received one as an incoming message, each once (XEP-0359 ids).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ...xmpp import ns
from ...xmpp.jid import JID
from ...xmpp.payloads.carbons import RECEIVED, SENT, Carbon, CarbonsError, Toggle
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname
from ..errors import XmppError

if TYPE_CHECKING:
    from ..client import Client

log = logging.getLogger(__name__)

_IQ = qname(ns.CLIENT, "iq")


def unwrap(stanza: Stanza, account: JID) -> Carbon | None:
    """The carbon copy a message holds, if it is one from ``account`` itself (§11)."""
    wrapper = next((child for child in stanza.el if child.tag in (RECEIVED, SENT)), None)
    if wrapper is None:
        return None
    if stanza.from_ is not None and stanza.from_ != account.bare:
        log.warning("ignoring a carbon copy forged by %s", stanza.from_)
        return None
    try:
        return Carbon.from_xml(wrapper)
    except CarbonsError as err:
        log.debug("ignoring a broken carbon copy: %s", err)
        return None


class Carbons:
    """Turns carbons on at every login; ``enabled`` says whether the server agreed."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.enabled = False
        client.on_connect(self._enable)

    async def _enable(self) -> None:
        """§4: an IQ set with ``<enable/>`` to our own account."""
        request = element(_IQ, {"type": "set"}, children=[Toggle(enable=True).to_xml()])
        try:
            await self.client.iq(request)
        except XmppError as err:
            self.enabled = False
            log.info("the server does not copy messages between our devices (carbons): %s", err.condition)
            return
        self.enabled = True
