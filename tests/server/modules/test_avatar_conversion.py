"""XEP-0084 avatars through PEP and the XEP-0398 conversion: PEP to vCard, vCard to PEP, and the
XEP-0153 photo hash the server puts in presence."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.modules.avatar_conversion import NS, image_type
from schnack.xmpp import ns
from schnack.xmpp.payloads.avatar import (
    DATA_NODE,
    METADATA_NODE,
    UPDATE,
    AvatarData,
    AvatarMetadata,
    Info,
    PhotoUpdate,
)
from schnack.xmpp.payloads.disco import DiscoInfo
from schnack.xmpp.payloads.pubsub import PUBSUB, EventItems
from schnack.xmpp.xml import serialize

from ...harness import Client, running, xml
from .messaging import login
from .test_pep import (
    answer_caps_query,
    befriend,
    caps_for,
    events,
    fetched,
    form,
    items,
    online,
    owner,
    publish,
    settled,
)

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
PNG_ID = hashlib.sha1(PNG).hexdigest()
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x00\x00\x00\x00\x00,\x00\x00\x00\x00"
GIF_ID = hashlib.sha1(GIF).hexdigest()
PRESENCE = f"{{{ns.CLIENT}}}presence"
# How Conversations and Gajim publish an avatar anyone may see.
OPEN = (("pubsub#access_model", "open"),)
VCARD_PHOTO = f"{{{ns.VCARD}}}PHOTO"
NODE_CONFIG = f"{PUBSUB}#node_config"


def metadata_xml(*infos: Info) -> str:
    return serialize(AvatarMetadata(infos).to_xml())


def data_xml(image: bytes) -> str:
    return serialize(AvatarData(image).to_xml())


async def vcard_of(client: Client, to: str) -> Element:
    await client.send(f"<iq type='get' id='vc' to='{to}'><vCard xmlns='{ns.VCARD}'/></iq>")
    (answer,) = client.take()
    assert answer.get("type") == "result", xml(answer)
    (card,) = answer
    return card


def photo_of(card: Element) -> tuple[str | None, bytes | None]:
    photo = card.find(VCARD_PHOTO)
    if photo is None:
        return None, None
    binval = photo.findtext(f"{{{ns.VCARD}}}BINVAL") or ""
    return photo.findtext(f"{{{ns.VCARD}}}TYPE"), base64.b64decode(binval)


async def set_vcard(client: Client, inner: str) -> None:
    await client.send(f"<iq type='set' id='vs'><vCard xmlns='{ns.VCARD}'>{inner}</vCard></iq>")
    got = client.take()
    answers = [el for el in got if el.get("id") == "vs"]
    assert [a.get("type") for a in answers] == ["result"], [xml(el) for el in got]


def photo_vcard(image: bytes, kind: str | None = "image/png") -> str:
    type_xml = f"<TYPE>{kind}</TYPE>" if kind is not None else ""
    return f"<FN>Alice</FN><PHOTO>{type_xml}<BINVAL>{base64.b64encode(image).decode()}</BINVAL></PHOTO>"


def photo_hashes(elements: list[Element]) -> list[str | None]:
    """The XEP-0153 hash in each presence among ``elements``."""
    found = []
    for el in elements:
        if el.tag == PRESENCE:
            updates = el.findall(UPDATE)
            assert len(updates) == 1, xml(el)
            found.append(PhotoUpdate.from_xml(updates[0]).hash)
    return found


async def test_account_announces_the_conversion(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await alice.send(f"<iq type='get' id='d' to='alice@localhost'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    (answer,) = alice.take()
    assert NS in DiscoInfo.from_xml(answer[0]).features


async def test_pep_avatar_notifies_contacts_and_becomes_the_vcard_photo(server: Server) -> None:
    """XEP-0084 §3.1-§3.4 through PEP; XEP-0398 §3.1."""
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    bob = await login(server, "bob@localhost/phone")
    c, info = caps_for(f"{METADATA_NODE}+notify")
    await bob.send(f"<presence>{c}</presence>")
    await answer_caps_query(server, bob, bob.take(), info)
    stranger = await online(server, "mallory@localhost/phone")
    for client in (alice, bob, stranger):
        client.take()
    answer, _ = await publish(alice, DATA_NODE, data_xml(PNG), item_id=PNG_ID, options=OPEN)
    assert answer.get("type") == "result", xml(answer)
    assert events(bob.take()) == []  # bob wants the metadata only
    answer, _ = await publish(alice, METADATA_NODE, metadata_xml(Info(PNG_ID, len(PNG), "image/png", 1, 1)),
                              item_id=PNG_ID, options=OPEN)
    assert answer.get("type") == "result", xml(answer)
    ((sender, event),) = events(bob.take())
    assert sender == "alice@localhost" and isinstance(event, EventItems)
    (item,) = event.items
    assert item.id == PNG_ID and item.payload is not None
    assert AvatarMetadata.from_xml(item.payload).stored == Info(PNG_ID, len(PNG), "image/png", 1, 1)
    # XEP-0084 §3.4: the contact fetches the image by its id.
    got = fetched(await items(bob, DATA_NODE, to="alice@localhost", inner=f"<item id='{PNG_ID}'/>"))
    (data,) = got.items
    assert data.payload is not None and AvatarData.from_xml(data.payload).image == PNG
    assert stranger.take() == []
    # XEP-0398 §3.1: anyone reading the vCard sees the same picture.
    assert photo_of(await vcard_of(stranger, "alice@localhost")) == ("image/png", PNG)
    assert (await vcard_of(stranger, "alice@localhost")).findtext(f"{{{ns.VCARD}}}FN") is None


async def test_pep_to_vcard_keeps_the_other_fields_and_checks_the_image(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await set_vcard(alice, "<FN>Alice Liddell</FN>")
    alice.take()
    # Metadata naming an image that is not in the data node, or only a URL, changes nothing.
    await publish(alice, METADATA_NODE, metadata_xml(Info(PNG_ID, len(PNG), "image/png")), item_id=PNG_ID)
    await publish(alice, METADATA_NODE, metadata_xml(Info(GIF_ID, 10, "image/gif", url="https://example.org/a.gif")),
                  item_id=GIF_ID)
    # An image whose SHA-1 is not its id is not taken either.
    await publish(alice, DATA_NODE, data_xml(GIF), item_id=PNG_ID, options=OPEN)
    await publish(alice, METADATA_NODE, metadata_xml(Info(PNG_ID, len(PNG), "image/png")), item_id=PNG_ID)
    card = await vcard_of(alice, "alice@localhost")
    assert photo_of(card) == (None, None) and card.findtext(f"{{{ns.VCARD}}}FN") == "Alice Liddell"
    await publish(alice, DATA_NODE, data_xml(GIF), item_id=GIF_ID)
    await publish(alice, METADATA_NODE, metadata_xml(Info(GIF_ID, len(GIF), "image/gif")), item_id=GIF_ID)
    card = await vcard_of(alice, "alice@localhost")
    assert photo_of(card) == ("image/gif", GIF) and card.findtext(f"{{{ns.VCARD}}}FN") == "Alice Liddell"
    # XEP-0084 §3.5: switching the avatar off takes the photo out.
    await publish(alice, METADATA_NODE, metadata_xml(), item_id="off")
    card = await vcard_of(alice, "alice@localhost")
    assert photo_of(card) == (None, None) and card.findtext(f"{{{ns.VCARD}}}FN") == "Alice Liddell"


async def test_contacts_only_avatar_stays_out_of_the_vcard(server: Server) -> None:
    """XEP-0398 §3.1 converts only an avatar anyone may see: the vCard is public (XEP-0054 §3.3)."""
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    stranger = await online(server, "mallory@localhost/phone")
    await set_vcard(alice, "<FN>Alice</FN>")
    contacts = (("pubsub#access_model", "presence"),)
    await publish(alice, DATA_NODE, data_xml(PNG), item_id=PNG_ID, options=contacts)
    await publish(alice, METADATA_NODE, metadata_xml(Info(PNG_ID, len(PNG), "image/png")), item_id=PNG_ID,
                  options=contacts)
    card = await vcard_of(stranger, "alice@localhost")
    assert photo_of(card) == (None, None) and card.findtext(f"{{{ns.VCARD}}}FN") == "Alice"
    await alice.send("<presence/>")
    assert photo_hashes(alice.take()) == [""]


async def test_avatar_made_contacts_only_leaves_the_vcard(server: Server) -> None:
    """A photo a conversion put in the vCard goes when the avatar stops being open; one the
    account set through the vCard stays."""
    alice = await online(server, "alice@localhost/phone")
    stranger = await online(server, "mallory@localhost/phone")
    await publish(alice, DATA_NODE, data_xml(GIF), item_id=GIF_ID, options=OPEN)
    await publish(alice, METADATA_NODE, metadata_xml(Info(GIF_ID, len(GIF), "image/gif")), item_id=GIF_ID,
                  options=OPEN)
    assert photo_of(await vcard_of(stranger, "alice@localhost")) == ("image/gif", GIF)
    # What Gajim does for a contacts-only avatar: reconfigure the nodes, then publish.
    for node in (DATA_NODE, METADATA_NODE):
        answer = await owner(alice, f"<configure node='{node}'>"
                                    f"{form(('pubsub#access_model', 'presence'), form_type=NODE_CONFIG)}</configure>")
        assert answer.get("type") == "result", xml(answer)
    await publish(alice, DATA_NODE, data_xml(PNG), item_id=PNG_ID)
    await publish(alice, METADATA_NODE, metadata_xml(Info(PNG_ID, len(PNG), "image/png")), item_id=PNG_ID)
    assert photo_of(await vcard_of(stranger, "alice@localhost")) == (None, None)
    await alice.send("<presence/>")
    assert photo_hashes(alice.take()) == [""]
    # A photo set through the vCard is public by choice; it stays when the avatar changes again.
    await set_vcard(alice, photo_vcard(GIF, "image/gif"))
    await publish(alice, DATA_NODE, data_xml(PNG), item_id=PNG_ID)
    await publish(alice, METADATA_NODE, metadata_xml(Info(PNG_ID, len(PNG), "image/png")), item_id=PNG_ID)
    assert photo_of(await vcard_of(stranger, "alice@localhost")) == ("image/gif", GIF)
    await publish(alice, METADATA_NODE, metadata_xml(), item_id="off")
    assert photo_of(await vcard_of(stranger, "alice@localhost")) == ("image/gif", GIF)


@pytest.mark.parametrize("removal", [
    (f"<delete node='{METADATA_NODE}'/>", f"<delete node='{DATA_NODE}'/>"),
    (f"<purge node='{METADATA_NODE}'/>",),
    (f"<delete node='{DATA_NODE}'/>",),
])
async def test_avatar_removed_from_pep_leaves_the_vcard(server: Server, removal: tuple[str, ...]) -> None:
    """An avatar taken away by deleting or purging its nodes, instead of publishing empty
    metadata, leaves the vCard and presence as well: the converted photo no longer shows."""
    alice = await online(server, "alice@localhost/phone")
    stranger = await online(server, "mallory@localhost/phone")
    await set_vcard(alice, "<FN>Alice</FN>")
    await publish(alice, DATA_NODE, data_xml(PNG), item_id=PNG_ID, options=OPEN)
    await publish(alice, METADATA_NODE, metadata_xml(Info(PNG_ID, len(PNG), "image/png")), item_id=PNG_ID,
                  options=OPEN)
    assert photo_of(await vcard_of(stranger, "alice@localhost")) == ("image/png", PNG)
    for action in removal:
        answer = await owner(alice, action)
        assert answer.get("type") == "result", xml(answer)
    card = await vcard_of(stranger, "alice@localhost")
    assert photo_of(card) == (None, None) and card.findtext(f"{{{ns.VCARD}}}FN") == "Alice"
    alice.take()
    await alice.send("<presence/>")
    assert photo_hashes(alice.take()) == [""]


async def test_access_model_changed_by_configuration(server: Server) -> None:
    """The vCard follows a configuration change of the avatar's access model, without a publish."""
    alice = await online(server, "alice@localhost/phone")
    stranger = await online(server, "mallory@localhost/phone")
    await publish(alice, DATA_NODE, data_xml(PNG), item_id=PNG_ID, options=OPEN)
    await publish(alice, METADATA_NODE, metadata_xml(Info(PNG_ID, len(PNG), "image/png")), item_id=PNG_ID)
    assert photo_of(await vcard_of(stranger, "alice@localhost")) == ("image/png", PNG)
    for model, expected in (("roster", (None, None)), ("open", ("image/png", PNG))):
        answer = await owner(alice, f"<configure node='{DATA_NODE}'>"
                                    f"{form(('pubsub#access_model', model), form_type=NODE_CONFIG)}</configure>")
        assert answer.get("type") == "result", xml(answer)
        assert photo_of(await vcard_of(stranger, "alice@localhost")) == expected, model


async def test_vcard_photo_becomes_the_pep_avatar(server: Server) -> None:
    """XEP-0398 §3.2: data first, then metadata, with notifications; the nodes are open."""
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/phone")
    stranger = await online(server, "mallory@localhost/phone")
    for client in (alice, bob):
        client.take()
    await set_vcard(alice, photo_vcard(PNG))
    got = [(e.node, tuple(i.id for i in e.items)) for _, e in events(bob.take()) if isinstance(e, EventItems)]
    assert got == [(DATA_NODE, (PNG_ID,)), (METADATA_NODE, (PNG_ID,))]
    meta = fetched(await items(stranger, METADATA_NODE, to="alice@localhost"))
    (item,) = meta.items
    assert item.payload is not None
    assert AvatarMetadata.from_xml(item.payload).infos == (Info(PNG_ID, len(PNG), "image/png"),)
    data = fetched(await items(stranger, DATA_NODE, to="alice@localhost", inner=f"<item id='{PNG_ID}'/>"))
    assert data.items[0].payload is not None and AvatarData.from_xml(data.items[0].payload).image == PNG
    # The same photo again publishes nothing; another one replaces it; none switches it off.
    await set_vcard(alice, photo_vcard(PNG) + "<NICKNAME>al</NICKNAME>")
    assert events(bob.take()) == []
    await set_vcard(alice, photo_vcard(GIF, kind=None))
    meta = fetched(await items(bob, METADATA_NODE, to="alice@localhost"))
    assert meta.items[0].payload is not None
    assert AvatarMetadata.from_xml(meta.items[0].payload).infos == (Info(GIF_ID, len(GIF), "image/gif"),)
    bob.take()
    await set_vcard(alice, "<FN>Alice</FN>")
    ((_, event),) = events(bob.take())
    assert isinstance(event, EventItems) and event.node == METADATA_NODE
    assert event.items[0].payload is not None and AvatarMetadata.from_xml(event.items[0].payload) == AvatarMetadata()


async def test_invalid_vcard_photo_converts_to_nothing(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await set_vcard(alice, "<PHOTO><TYPE>image/png</TYPE><BINVAL>not base64 at all!</BINVAL></PHOTO>")
    await alice.send(f"<iq type='get' id='items'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                     f"<items node='{METADATA_NODE}'/></pubsub></iq>")
    (answer,) = alice.take()
    assert answer.get("type") == "error"


async def test_invalid_vcard_photo_replaces_a_valid_one(server: Server) -> None:
    """A vCard whose new photo is not valid base64 has no photo: the PEP avatar goes (§3.2) and
    presence says so (§4), as it does once the server restarted and reads the stored vCard."""
    await befriend(server, "alice", "bob")
    bob = await online(server, "bob@localhost/phone")
    alice = await online(server, "alice@localhost/phone")
    await set_vcard(alice, photo_vcard(PNG))
    bob.take()
    await set_vcard(alice, "<PHOTO><TYPE>image/png</TYPE><BINVAL>not base64 at all!</BINVAL></PHOTO>")
    ((_, event),) = events(bob.take())
    assert isinstance(event, EventItems) and event.node == METADATA_NODE
    assert event.items[0].payload is not None and AvatarMetadata.from_xml(event.items[0].payload) == AvatarMetadata()
    await alice.send("<presence/>")
    assert photo_hashes(bob.take()) == [""]


async def test_presence_carries_the_photo_hash(server: Server) -> None:
    """XEP-0398 §4 and XEP-0153 §3.1, §4."""
    await befriend(server, "alice", "bob")
    bob = await online(server, "bob@localhost/phone")
    alice = await login(server, "alice@localhost/phone")
    await alice.send("<presence/>")
    await settled(server)
    assert photo_hashes(bob.take()) == [""]
    await set_vcard(alice, photo_vcard(PNG))
    bob.take()
    cases = [
        ("", PNG_ID),
        ("<x xmlns='vcard-temp:x:update'/>", PNG_ID),
        ("<x xmlns='vcard-temp:x:update'><photo>0000</photo></x>", PNG_ID),
        ("<x xmlns='vcard-temp:x:update'><photo/></x>", ""),
    ]
    for inner, expected in cases:
        await alice.send(f"<presence>{inner}</presence>")
        assert photo_hashes(bob.take()) == [expected], inner
    # Directed presence too; unavailable presence is left alone.
    carol = await online(server, "carol@localhost/phone")
    await alice.send("<presence to='carol@localhost/phone'/>")
    assert photo_hashes(carol.take()) == [PNG_ID]
    await alice.send("<presence type='unavailable'/>")
    (gone,) = [el for el in bob.take() if el.tag == PRESENCE]
    assert gone.find(UPDATE) is None
    # A PEP avatar changes the hash of later presences.
    alice2 = await online(server, "alice@localhost/laptop")
    await publish(alice2, DATA_NODE, data_xml(GIF), item_id=GIF_ID, options=OPEN)
    await publish(alice2, METADATA_NODE, metadata_xml(Info(GIF_ID, len(GIF), "image/gif")), item_id=GIF_ID)
    bob.take()
    await alice2.send("<presence><show>away</show></presence>")
    assert photo_hashes(bob.take()) == [GIF_ID]


async def test_hash_after_a_restart(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        alice = await online(server, "alice@localhost/phone")
        await set_vcard(alice, photo_vcard(PNG))
    async with running(tmp_path) as server:
        await befriend(server, "alice", "bob")
        bob = await online(server, "bob@localhost/phone")
        alice = await login(server, "alice@localhost/phone")
        await alice.send("<presence/>")
        assert photo_hashes(bob.take()) == [PNG_ID]


@pytest.mark.parametrize(("image", "kind"), [
    (PNG, "image/png"), (GIF, "image/gif"), (b"\xff\xd8\xff\xe0rest", "image/jpeg"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"), (b"plain", "application/octet-stream"),
])  # fmt: skip
def test_image_type(image: bytes, kind: str) -> None:
    assert image_type(image) == kind
