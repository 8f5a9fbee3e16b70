"""XEP-0054: vcard-temp, each account's vCard kept by the server.

The owner reads and replaces the whole vCard (§3.1, §3.2); anyone may read it (§3.3). An
existing account without a vCard answers with an empty ``<vCard/>``, which §3.1 allows and
clients expect; a bare JID without an account gets service-unavailable (§3.3, RFC 6121 §8.5.1).
After the owner replaced it, the event ``vcard/updated`` (host, username, vCard) lets other
formats follow (XEP-0398).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.parser import parse_frame
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname, serialize
from ..config import bounded
from ..module import Module

if TYPE_CHECKING:
    from ..sessions import Session

VCARD = qname(ns.VCARD, "vCard")
STORE = "vcard"
UPDATED = "vcard/updated"


@dataclass(frozen=True)
class VCardOptions:
    """How large a vCard may be (avatars in PHOTO make them big)."""

    max_size: int = bounded(256 * 1024, min=1024, max=16 * 1024 * 1024, help="bytes of serialized vCard")


class VCard(Module[VCardOptions]):
    """Stores and serves vCards (XEP-0054 §3)."""

    name = "vcard"
    features = (ns.VCARD,)
    account_features = (ns.VCARD,)
    Options = VCardOptions

    def setup(self) -> None:
        self.iq("self", VCARD, get=self.get_own, set=self.set_own)
        self.iq("bare", VCARD, get=self.get_other, set=self.set_other)
        self.hook("user-deleted", self.forget)

    async def get_own(self, stanza: Stanza, origin: Session | None) -> Element:
        """§3.1: the user's own vCard, or an empty one."""
        assert origin is not None
        return stanza.result(await self.load(origin.host, origin.username))

    async def set_own(self, stanza: Stanza, origin: Session | None) -> Element:
        """§3.2: replace the whole vCard."""
        assert origin is not None and stanza.payload is not None
        await self.store(origin.host, origin.username, stanza.payload)
        if self.server.hooks.has(UPDATED):
            await self.server.hooks.fire_all(UPDATED, origin.host, origin.username, stanza.payload)
        return stanza.result()

    async def store(self, host: str, username: str, vcard: Element) -> None:
        """Keep ``vcard`` as the account's vCard; not-acceptable if it is too large."""
        data = serialize(vcard).encode()
        if len(data) > self.options.max_size:
            raise StanzaError("not-acceptable", f"a vCard may be at most {self.options.max_size} bytes")
        await self.server.storage.kv.set(host, username, STORE, data)

    async def get_other(self, stanza: Stanza, _origin: Session | None) -> Element:
        """§3.3: another user's vCard, answered by the server on that user's behalf."""
        assert stanza.to is not None and stanza.to.local is not None
        host, username = stanza.to.domain, stanza.to.local
        if await self.server.storage.accounts.get(host, username) is None:
            raise StanzaError("service-unavailable")
        return stanza.result(await self.load(host, username))

    async def set_other(self, _stanza: Stanza, _origin: Session | None) -> Element:
        """§3.2: only the owner may change a vCard."""
        raise StanzaError("forbidden", "you can only change your own vCard")

    async def forget(self, host: str, username: str) -> None:
        """A deleted account's vCard goes with it."""
        await self.server.storage.kv.delete(host, username, STORE)

    async def load(self, host: str, username: str) -> Element:
        """The account's vCard; an empty one if it has none."""
        data = await self.server.storage.kv.get(host, username, STORE)
        if data is None:
            return element(VCARD)
        return parse_frame(data, len(data))
