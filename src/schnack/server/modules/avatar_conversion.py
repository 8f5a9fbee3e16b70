"""XEP-0398: User Avatar to vCard-Based Avatars Conversion (v1.0.0, ``urn:xmpp:pep-vcard-conversion:0``).

Apps that show avatars from PEP (XEP-0084: Conversations, Dino, Gajim) and apps that read the
vCard (XEP-0153: group chat occupants, older clients) show the same picture, whichever way it
was set. The feature is announced on the account (§2).

- PEP to vCard (§3.1): when the account's ``urn:xmpp:avatar:metadata`` node gets an item
  (event ``pep/published``), the ``<info/>`` without a url names the image in
  ``urn:xmpp:avatar:data``; that image becomes the vcard-temp ``<PHOTO/>`` (with the info's
  type) if its SHA-1 is the id, as §3.1 recommends checking. An empty ``<metadata/>``
  (XEP-0084 §3.5) takes the photo out. Metadata whose image is not in the data node, or does
  not match its id, leaves the vCard as it is. Only an open data node is converted: anyone
  reads the vCard (XEP-0054 §3.3), so an avatar for contacts (access model presence, roster
  or whitelist) stays out of it. Then a photo an earlier conversion put in the vCard goes
  (the account remembers the hash it converted last); one the account set through the vCard
  stays, as it was public by choice. A configuration change of an avatar node (event
  ``pep/configured``) converts the current metadata again, so the vCard follows an access
  model changed without a publish. So does a retraction, purge or deletion (event
  ``pep/removed``): an avatar whose metadata is gone is no avatar, as empty metadata is none,
  and one whose data node is gone is not open.
- vCard to PEP (§3.2): a vCard the account sets (event ``vcard/updated``) with an inline photo
  publishes the image to the data node under its SHA-1, then metadata with one ``<info/>``
  (the vCard's TYPE, or the type the image's first bytes show); the contacts are notified as
  for any publish. A vCard without a photo switches the PEP avatar off with an empty
  ``<metadata/>``. Nodes this creates are open: the vCard they mirror is public (§6).
  A photo that is not valid base64 counts as no photo: it switches the PEP avatar off too.
- Presence (§4): every available presence a local client sends, broadcast or directed (group
  chat joins too), carries ``<x xmlns='vcard-temp:x:update'><photo>hash</photo></x>`` with the
  hash of the account's photo, an empty ``<photo/>`` when there is none (XEP-0153 §4).
  A client's ``<x/>`` without ``<photo/>``, or with another hash, is replaced; an empty
  ``<photo/>`` from the client stays as it is, as §4 requires.

The hash of each account's photo is kept in memory for the accounts seen lately, so a presence
costs no storage read; in a cluster a node that changes a photo tells the others
(``ClusterBus.announce``), which forget their entry.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID
from ...xmpp.payloads.avatar import (
    DATA_NODE,
    METADATA_NODE,
    UPDATE,
    AvatarData,
    AvatarError,
    AvatarMetadata,
    Info,
    PhotoUpdate,
    VCardPhoto,
    remove_photo,
)
from ...xmpp.payloads.pubsub import NodeConfig
from ...xmpp.stanza import Stanza
from ..module import Module
from .pep import CONFIGURED, PUBLISHED, REMOVED, Pep
from .vcard import UPDATED, VCard

if TYPE_CHECKING:
    from ..sessions import Session

log = logging.getLogger(__name__)

NS = "urn:xmpp:pep-vcard-conversion:0"
# Accounts whose photo hash is remembered; each entry is a JID and 40 characters.
_KNOWN = 10_000
# What the cluster bus calls the photo hashes in its change announcements.
_STORE = "avatar-hash"
# Per account: the hash of the photo the last PEP to vCard conversion put in the vCard.
_CONVERTED = "avatar-converted"
# What the first bytes of an image say its type is, for a vCard photo without TYPE.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def image_type(image: bytes) -> str:
    """The media type of ``image`` by its signature (WebP: RIFF....WEBP); octet-stream if unknown."""
    for magic, kind in _MAGIC:
        if image.startswith(magic):
            return kind
    if image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


class AvatarConversion(Module[Any]):
    """Keeps the PEP avatar and the vCard photo the same, and stamps its hash on presence (XEP-0398)."""

    name = "avatar_conversion"
    depends = ("pep", "vcard")
    account_features = (NS,)

    def setup(self) -> None:
        self.pep = self.required(Pep)
        self.vcard = self.required(VCard)
        self._hashes: OrderedDict[JID, str] = OrderedDict()
        # In a cluster, a node that changes an account's photo tells the others, which drop its hash.
        bus = self.server.cluster.bus
        bus.on_changed(self._changed_elsewhere)
        # Announcements may have been missed while the subscription was broken.
        bus.on_resubscribed(self._hashes.clear)
        self.hook(PUBLISHED, self.pep_to_vcard)
        self.hook(CONFIGURED, self.reconfigured)
        self.hook(REMOVED, self.removed)
        self.hook(UPDATED, self.vcard_to_pep)
        for target in ("self", "bare", "full", "host", "service", "remote"):
            self.route(f"pre-presence/{target}", self.stamp, priority=500)
        self.hook("user-deleted", self.forget)

    # §3.1 ----------------------------------------------------------------------------------------

    async def pep_to_vcard(self, owner: JID, node: str, _item_id: str, payload: Element) -> None:
        """§3.1: the image the new metadata names becomes the vCard photo."""
        if node != METADATA_NODE:
            return
        try:
            metadata = AvatarMetadata.from_xml(payload)
        except AvatarError as err:
            log.debug("avatar metadata of %s not converted: %s", owner, err)
            return
        assert owner.local is not None
        vcard = await self.vcard.load(owner.domain, owner.local)
        current = _photo_of(vcard)
        if not await self._open(owner):
            if current is not None and current.id == await self._converted(owner):
                remove_photo(vcard)
                await self._store(owner, vcard, "")
            return
        if not metadata.infos:
            if current is None:
                return
            remove_photo(vcard)
            await self._store(owner, vcard, "")
            return
        info = metadata.stored
        if info is None:
            return
        photo = await self._image(owner, info)
        if photo is None or photo == current:
            return
        photo.put_in(vcard)
        await self._store(owner, vcard, photo.id)

    async def reconfigured(self, owner: JID, node: str) -> None:
        """§3.1 again after an avatar node's configuration changed: an avatar that stopped being
        open leaves the vCard, one that became open enters it."""
        await self._reconvert(owner, node, removed=False)

    async def removed(self, owner: JID, node: str) -> None:
        """§3.1 again after items of an avatar node were retracted or purged, or the node deleted:
        no metadata left is no avatar, as empty metadata is; a data node gone is not open."""
        await self._reconvert(owner, node, removed=True)

    async def _reconvert(self, owner: JID, node: str, removed: bool) -> None:
        if node not in (DATA_NODE, METADATA_NODE):
            return
        last = await self.pep.readable_item(owner, METADATA_NODE, None, owner)
        if last is not None:
            await self.pep_to_vcard(owner, METADATA_NODE, last.id, last.payload)
        elif removed:
            await self.pep_to_vcard(owner, METADATA_NODE, "", AvatarMetadata().to_xml())

    async def _open(self, owner: JID) -> bool:
        """Whether anyone may read the account's avatar image, as anyone reads its vCard."""
        node = await self.pep.store.node(owner, DATA_NODE)
        return node is not None and node.config.access_model == "open"

    async def _converted(self, owner: JID) -> str | None:
        """The hash of the photo the last conversion put in the vCard, if it is still there."""
        assert owner.local is not None
        data = await self.server.storage.kv.get(owner.domain, owner.local, _CONVERTED)
        return data.decode() if data is not None else None

    async def _image(self, owner: JID, info: Info) -> VCardPhoto | None:
        """The image ``info`` describes, from the data node, if it is there and matches its id."""
        item = await self.pep.store.item(owner, DATA_NODE, info.id)
        if item is None:
            return None
        try:
            data = AvatarData.from_xml(item.payload)
        except AvatarError as err:
            log.debug("avatar data %s of %s not converted: %s", info.id, owner, err)
            return None
        if data.id != info.id.lower():
            log.debug("avatar data %s of %s does not match its SHA-1 %s", info.id, owner, data.id)
            return None
        return VCardPhoto(info.type, data.image)

    async def _store(self, owner: JID, vcard: Element, photo_hash: str) -> None:
        """Keep the vCard a conversion changed, and remember its photo as converted."""
        assert owner.local is not None
        try:
            await self.vcard.store(owner.domain, owner.local, vcard)
        except StanzaError as err:
            log.info("the avatar of %s does not fit its vCard: %s", owner, err.text)
            return
        await self.server.storage.kv.set(owner.domain, owner.local, _CONVERTED, photo_hash.encode() or None)
        await self._changed(owner, photo_hash)

    # §3.2 ----------------------------------------------------------------------------------------

    async def vcard_to_pep(self, host: str, username: str, vcard: Element) -> None:
        """§3.2: publish the vCard's photo as the PEP avatar (data first, then metadata)."""
        owner = JID(username, host)
        # A photo that is not valid base64 counts as none, as it does when the stored vCard is
        # read later (the hash in presence after a restart): the avatar it replaces goes.
        photo = _photo_of(vcard)
        if photo is None or photo.id != await self._converted(owner):
            # The account chose this photo itself: no conversion takes it out again.
            await self.server.storage.kv.delete(host, username, _CONVERTED)
        await self._changed(owner, photo.id if photo is not None else "")
        published = await self.pep.readable_item(owner, METADATA_NODE, None, owner)
        current = _metadata_of(published.payload) if published is not None else None
        if photo is None:
            if current is not None and current.infos:
                await self._publish(owner, METADATA_NODE, "none", AvatarMetadata().to_xml())
            return
        stored = current.stored if current is not None else None
        if stored is not None and stored.id == photo.id:
            return
        info = Info(photo.id, len(photo.image), photo.type or image_type(photo.image))
        if await self._publish(owner, DATA_NODE, photo.id, AvatarData(photo.image).to_xml()):
            await self._publish(owner, METADATA_NODE, photo.id, AvatarMetadata((info,)).to_xml())

    async def _publish(self, owner: JID, node: str, item_id: str, payload: Element) -> bool:
        try:
            await self.pep.publish_item(owner, node, item_id, payload, NodeConfig(access_model="open"))
        except StanzaError as err:
            log.info("the vCard avatar of %s could not be published to %s: %s", owner, node, err.text)
            return False
        return True

    # §4 ------------------------------------------------------------------------------------------

    async def stamp(self, stanza: Stanza, origin: Session | None) -> None:
        """§4: the photo hash in each available presence, unless the client sent an empty ``<photo/>``."""
        if stanza.type is not None or origin is None:
            return
        el = stanza.el
        updates = el.findall(UPDATE)
        for update in updates:
            try:
                if PhotoUpdate.from_xml(update).hash == "":
                    return
            except AvatarError:
                pass
        photo_hash = await self._hash(origin.jid.bare)
        for update in updates:
            el.remove(update)
        el.append(PhotoUpdate(photo_hash).to_xml())

    async def _hash(self, owner: JID) -> str:
        known = self._hashes.get(owner)
        if known is not None:
            self._hashes.move_to_end(owner)
            return known
        assert owner.local is not None
        photo = _photo_of(await self.vcard.load(owner.domain, owner.local))
        photo_hash = photo.id if photo is not None else ""
        self._remember(owner, photo_hash)
        return photo_hash

    def _remember(self, owner: JID, photo_hash: str) -> None:
        self._hashes[owner] = photo_hash
        self._hashes.move_to_end(owner)
        while len(self._hashes) > _KNOWN:
            self._hashes.popitem(last=False)

    async def _changed(self, owner: JID, photo_hash: str) -> None:
        self._remember(owner, photo_hash)
        await self.server.cluster.bus.announce(_STORE, str(owner))

    def _changed_elsewhere(self, store: str, account: str) -> None:
        """Another node of the cluster changed ``account``'s photo: the hash this node keeps goes."""
        if store == _STORE:
            self._hashes.pop(JID.parse(account), None)

    async def forget(self, host: str, username: str) -> None:
        """The account is gone: every node drops the hash it keeps, or a new account of that name
        would have the old owner's photo announced in its presence through the others."""
        self._hashes.pop(JID(username, host), None)
        await self.server.storage.kv.delete(host, username, _CONVERTED)
        await self.server.cluster.bus.announce(_STORE, f"{username}@{host}")


def _photo_of(vcard: Element) -> VCardPhoto | None:
    """The vCard's inline photo; None without one or if it is not valid base64."""
    try:
        return VCardPhoto.from_vcard(vcard)
    except AvatarError:
        return None


def _metadata_of(payload: Element) -> AvatarMetadata | None:
    try:
        return AvatarMetadata.from_xml(payload)
    except AvatarError:
        return None
