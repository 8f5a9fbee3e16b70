"""End-to-end encryption policy: with ``policy = "required"`` plaintext chat bodies are refused.

Checks the messages a local client sends to a user of this server (routes ``pre-message/bare``,
``pre-message/full`` and ``pre-message/self``, before any routing). A chat or normal message
(RFC 6121 §5.2.2: also one without a type) that has a ``<body/>`` must carry an end-to-end
encrypted payload: OMEMO (XEP-0384, namespaces ``eu.siacs.conversations.axolotl`` and
``urn:xmpp:omemo:2``), OpenPGP for XMPP (XEP-0373 ``<openpgp/>``) or legacy OpenPGP (XEP-0027
``<x xmlns='jabber:x:encrypted'/>``); the body next to them is only the fallback text for clients
that cannot decrypt. Otherwise the sender gets policy-violation (RFC 6120 §8.3.3.12) with a
sentence saying what to do. Messages without a body (receipts, markers, chat states) carry no
content and pass; so do messages to the server's own domains, which no route here covers.

Groupchat and headline messages are left alone: they are not conversations between two users.
Groups are the seam: only recipients on the account domains (``domains`` in the configuration)
are checked, so messages to a group service on a domain of its own (groupchat, and private
messages through a room, addressed to ``room@service/nick``) pass here, and the groups module
brings the rule for groups (OMEMO in a group is encrypted to each member) on its own routes.

No disco feature is announced: there is no standard one for such a policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.stanza import Stanza
from ...xmpp.xml import qname
from ..config import bounded
from ..module import Module
from .message import message_type

if TYPE_CHECKING:
    from ..sessions import Session

ENCRYPTED: Final = frozenset(
    {
        qname(ns.OMEMO_LEGACY, "encrypted"),
        qname(ns.OMEMO_2, "encrypted"),
        qname(ns.OPENPGP, "openpgp"),
        qname(ns.OPENPGP_LEGACY, "x"),
    }
)
REFUSAL = (
    "This server requires end-to-end encryption: your message was not delivered. "
    "Enable OMEMO encryption for this chat in your client, then send it again."
)


@dataclass(frozen=True)
class EndToEndOptions:
    """Whether plaintext chat messages between users are refused."""

    policy: str = bounded(
        "required",
        choices=("required", "optional"),
        help="required: refuse chat messages whose body is not end-to-end encrypted",
    )


class EndToEndPolicy(Module[EndToEndOptions]):
    """Refuses plaintext chat messages between users when the policy is "required"."""

    name = "e2e"
    Options = EndToEndOptions

    def setup(self) -> None:
        self._account_domains = frozenset(self.server.config.domains)
        if self.options.policy != "required":
            return
        for target in ("bare", "full", "self"):
            # Before anything else sees the message: refused means neither delivered nor stored.
            self.route(f"pre-message/{target}", self.check, priority=1000)

    async def check(self, stanza: Stanza, _origin: Session | None) -> None:
        """Refuse a chat or normal message with a body but no end-to-end encrypted payload."""
        if message_type(stanza) not in ("chat", "normal"):
            return
        if stanza.to is not None and stanza.to.domain not in self._account_domains:
            return
        el = stanza.el
        if el.find(qname(stanza.namespace, "body")) is None:
            return
        if any(child.tag in ENCRYPTED for child in el):
            return
        raise StanzaError("policy-violation", REFUSAL)
