"""OMEMO between our clients through schnack's server (XEP-0384, both versions), on real sockets.

Encrypted by default, to every device of the peer; refused with a sentence when the peer has
none; readable nowhere on the server (its database holds the ciphertext); trusted blindly until
a key is verified, after which a new key stops the message until the user decides; every change
of a contact's keys announced; the state kept on disk across restarts.
"""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from xml.etree.ElementTree import Element

import pytest
from omemo.types import OMEMOException

from schnack.client import Client, Connected, Disconnected, EncryptionRequired, Message
from schnack.client.features import messages
from schnack.client.omemo import (
    OLDMEMO,
    TWOMEMO,
    KeysChanged,
    NoOmemoDevices,
    Omemo,
    OmemoSettings,
    OmemoUnavailable,
    Trust,
    UnknownFingerprint,
    UntrustedKeys,
    adapter,
)
from schnack.client.omemo import pre_keys as used_pre_keys
from schnack.client.omemo.pep import Pep
from schnack.client.omemo.protocol import MAX_ITEMS, bundle_place, device_list_node
from schnack.client.omemo.storage import FILENAME
from schnack.server import admin
from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.payloads.dataforms import DataForm, Field
from schnack.xmpp.payloads.pubsub import NODE_CONFIG, Configure
from schnack.xmpp.xml import element, qname

from ...harness import add_user, running
from ..conftest import PASSWORD, make_client, next_of, online
from ..proxy import Proxy

VERSIONS = {
    "legacy": (OLDMEMO,),
    "omemo2": (TWOMEMO,),
    "both": (OLDMEMO, TWOMEMO),
    "both, omemo2 first": (TWOMEMO, OLDMEMO),
}


@pytest.mark.parametrize("versions", VERSIONS.values(), ids=VERSIONS.keys())
async def test_two_clients_exchange_encrypted_messages(chat_server: Server, clients: list[Client],
                                                       versions: tuple[str, ...]) -> None:
    settings = OmemoSettings(namespaces=versions)
    alice = await online(chat_server, clients, "alice@localhost/phone", omemo=settings)
    bob = await online(chat_server, clients, "bob@localhost/laptop", omemo=settings)
    alice_inbox, bob_inbox = alice.messages(), bob.messages()
    sent = await alice.send("bob@localhost", "hello bob")
    got = await next_of(bob_inbox)
    assert (got.sender, got.text, got.id, got.encrypted, got.undecryptable) == (alice.jid, "hello bob", sent, True, None)
    # The preferred version of those both sides speak; the body on the wire is only the fallback.
    assert got.element.find(f"{{{versions[0]}}}encrypted") is not None
    assert "hello bob" not in (got.element.findtext("{jabber:client}body") or "")
    own = await alice.omemo.own_device()
    assert got.device is not None and (got.device.id, got.device.fingerprint) == (own.id, own.fingerprint)
    assert got.device.trust is Trust.BLIND
    await bob.send(got.sender, "hi alice")
    reply = await next_of(alice_inbox)
    assert (reply.sender, reply.text, reply.encrypted) == (bob.jid, "hi alice", True)
    for text in ("one", "two", "three"):
        await alice.send("bob@localhost", text)
    assert [(await next_of(bob_inbox)).text for _ in range(3)] == ["one", "two", "three"]


async def test_a_peer_without_omemo_devices_gets_nothing(chat_server: Server, clients: list[Client]) -> None:
    """carol never used OMEMO: nothing is sent unless plaintext is asked for."""
    await add_user(chat_server, "carol", PASSWORD)
    alice = await online(chat_server, clients, "alice@localhost")
    with pytest.raises(NoOmemoDevices) as refused:
        await alice.send("carol@localhost", "secret")
    assert str(refused.value) == "carol@localhost has no OMEMO devices; pass encrypted=False to send unencrypted"
    assert isinstance(refused.value, EncryptionRequired)
    assert await chat_server.storage.archive.count("localhost", "carol", "offline") == 0


def _database_texts(path: Path) -> list[str]:
    """Every text and blob value in every table of an SQLite database."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        values: list[str] = []
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, bytes):
                        values.append(value.decode("utf-8", errors="replace"))
                    elif isinstance(value, str):
                        values.append(value)
        return values
    finally:
        db.close()


async def test_the_server_stores_only_ciphertext(chat_server: Server, clients: list[Client], tmp_path: Path) -> None:
    """bob is offline: the message waits in offline storage and in both archives (MAM), encrypted;
    bob's device decrypts it at login (the key exchange travelled in it)."""
    secret = "the launch code is 7351"
    bob = make_client(chat_server, "bob@localhost/desk", data_dir=tmp_path / "bob")
    await bob.connect()
    await bob.close()
    alice = await online(chat_server, clients, "alice@localhost")
    sent = await alice.send("bob@localhost", secret)
    await alice.roster()  # answered after the message was stored
    stored = [text for text in _database_texts(chat_server.config.data_dir / "schnack.db") if sent in text]
    # Offline storage for bob, bob's archive, alice's archive: each the encrypted stanza.
    assert len(stored) >= 3
    for text in stored:
        assert secret not in text
        assert f"<encrypted xmlns=\"{OLDMEMO}\">" in text
    raw = b"".join(p.read_bytes() for p in chat_server.config.data_dir.glob("schnack.db*"))
    assert secret.encode() not in raw
    bob = await online(chat_server, clients, "bob@localhost/desk", data_dir=tmp_path / "bob")
    got = await next_of(bob.messages())
    assert (got.id, got.text, got.encrypted) == (sent, secret, True)
    assert got.stamp is not None  # it waited (XEP-0203)


async def test_state_survives_a_restart(chat_server: Server, clients: list[Client], tmp_path: Path) -> None:
    """Same device and keys after a restart; the session goes on without a new key exchange."""
    directory = tmp_path / "alice"
    alice = await online(chat_server, clients, "alice@localhost", data_dir=directory)
    bob = await online(chat_server, clients, "bob@localhost")
    inbox, alice_inbox = bob.messages(), alice.messages()
    first_device = await alice.omemo.own_device()
    await alice.send("bob@localhost", "before")
    first = await next_of(inbox)
    assert first.text == "before" and first.element.find(f".//{{{OLDMEMO}}}key[@prekey='true']") is not None
    # bob's answer completes the key exchange (XEP-0384 §5.4.2).
    await bob.send("alice@localhost", "answer")
    assert (await next_of(alice_inbox)).text == "answer"
    await alice.close()
    state = directory / FILENAME
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    again = await online(chat_server, clients, "alice@localhost", data_dir=directory)
    assert await again.omemo.own_device() == first_device
    await again.send("bob@localhost", "after")
    second = await next_of(inbox)
    assert second.text == "after" and second.device is not None and second.device.id == first_device.id
    assert second.element.find(f".//{{{OLDMEMO}}}key[@prekey='true']") is None
    assert [d.id for d in await bob.omemo.devices("alice@localhost") if d.active] == [first_device.id]


async def test_a_new_session_after_a_kick_keeps_the_device(chat_server: Server, clients: list[Client]) -> None:
    """After the link comes back (a new session: the server threw the old one out), the same device
    goes on, and a message to it still decrypts."""
    alice = await online(chat_server, clients, "alice@localhost", backoff=(0.05, 0.5))
    bob = await online(chat_server, clients, "bob@localhost")
    device = await alice.omemo.own_device()
    events, inbox = alice.events(), alice.messages()
    await admin.request(chat_server.config.data_dir, "kick", jid=str(alice.jid))
    assert isinstance(await next_of(events), Disconnected)
    assert isinstance(await next_of(events), Connected)
    assert await alice.omemo.own_device() == device
    assert [d.id for d in await bob.omemo.devices("alice@localhost") if d.active] == [device.id]
    await bob.send("alice@localhost", "still you?")
    got = await next_of(inbox)
    assert (got.text, got.encrypted) == ("still you?", True)


async def test_our_new_device_reads_what_a_client_without_presence_sends(
        chat_server: Server, clients: list[Client], monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that announces no presence gets no device list notifications (XEP-0163 sends
    them on presence); our own device list is fetched again when it is old, as a contact's is,
    so that a device we added since can read what this one sends."""
    sender = await online(chat_server, clients, "alice@localhost/script", available=False)
    await online(chat_server, clients, "bob@localhost")
    await sender.send("bob@localhost", "before")
    phone = await online(chat_server, clients, "alice@localhost/phone")
    inbox = phone.messages()
    monkeypatch.setattr(adapter, "DEVICE_LISTS_FRESH_FOR", 0.0)
    await sender.send("bob@localhost", "after")
    got = await next_of(inbox, live)
    assert (got.text, got.outgoing, got.undecryptable) == ("after", True, None)


def live(message: Message) -> bool:
    """A message as it was sent, not one read from the archive."""
    return not message.history


async def _contacts(a: Client, b: Client) -> None:
    """Make ``a`` and ``b`` see each other's presence (and so get each other's PEP notifications)."""
    updates = a.roster_updates()
    await a.approve(b.account)
    await b.approve(a.account)
    await a.add_contact(b.account)
    await b.add_contact(a.account)
    await next_of(updates, lambda contact: contact.jid == b.account and contact.subscription == "both")


async def test_blind_trust_until_a_key_is_verified(chat_server: Server, clients: list[Client]) -> None:
    alice = await online(chat_server, clients, "alice@localhost")
    bob = await online(chat_server, clients, "bob@localhost/one")
    await _contacts(alice, bob)
    changes, inbox_one = alice.omemo.key_changes(), bob.messages()
    one = await bob.omemo.own_device()
    await alice.send("bob@localhost", "hello")
    assert (await next_of(inbox_one)).text == "hello"
    assert [(d.id, d.fingerprint, d.trust) for d in await alice.omemo.devices("bob@localhost")] == \
        [(one.id, one.fingerprint, Trust.BLIND)]

    # A second device of bob's: alice hears of it from the server (PEP), and trusts it blindly.
    bob_two = await online(chat_server, clients, "bob@localhost/two")
    two = await bob_two.omemo.own_device()
    change = await next_of(changes)
    assert change == KeysChanged(bob.account, added=(change.added[0],))
    assert (change.added[0].id, change.added[0].fingerprint) == (two.id, two.fingerprint)
    assert f"the OMEMO keys of bob@localhost changed: new device {two.id}" in str(change)
    inbox_two = bob_two.messages()
    await alice.send("bob@localhost", "to both")
    assert (await next_of(inbox_one)).text == "to both"
    # A new device may first read older messages from the archive (history, encrypted before it
    # existed, so not for it); what must reach it is the live one.
    assert (await next_of(inbox_two, live)).text == "to both"

    # alice verifies bob's first key: from now on a new key needs her decision.
    verified = await alice.omemo.trust("bob@localhost", one.fingerprint.replace(" ", "").upper())
    assert (verified.id, verified.trust) == (one.id, Trust.VERIFIED)
    bob_three = await online(chat_server, clients, "bob@localhost/three")
    three = await bob_three.omemo.own_device()
    change = await next_of(changes)
    assert [d.id for d in change.added] == [three.id]
    with pytest.raises(UntrustedKeys) as refused:
        await alice.send("bob@localhost", "held back")
    assert [d.id for d in refused.value.devices] == [three.id]
    assert three.fingerprint in str(refused.value) and "encrypted=False" in str(refused.value)
    await alice.omemo.trust("bob@localhost", three.fingerprint)

    # alice refuses bob's second key: that device can no longer read her messages.
    await alice.omemo.distrust("bob@localhost", two.fingerprint)
    inbox_three = bob_three.messages()
    await alice.send("bob@localhost", "not for two")
    assert (await next_of(inbox_one)).text == "not for two"
    assert (await next_of(inbox_three, live)).text == "not for two"
    refused_copy = await next_of(inbox_two, live)
    assert (refused_copy.text, refused_copy.encrypted) == (None, True)
    assert refused_copy.undecryptable == "the message is not encrypted for this device"
    trust = {d.id: d.trust for d in await alice.omemo.devices("bob@localhost")}
    assert trust == {one.id: Trust.VERIFIED, two.id: Trust.DISTRUSTED, three.id: Trust.VERIFIED}
    with pytest.raises(UnknownFingerprint):
        await alice.omemo.trust("bob@localhost", "00" * 32)


@pytest.fixture
async def server_without_pep(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(tmp_path, listen=True, modules={"disable": ["pep", "bookmarks", "avatar_conversion", "vcard4"], "e2e": {"policy": "optional"}}) as server:
        for user in ("alice", "bob"):
            await add_user(server, user, PASSWORD)
        yield server


async def test_without_pep_on_the_server_encryption_is_refused_clearly(server_without_pep: Server,
                                                                       clients: list[Client]) -> None:
    """The client still connects and works; only encrypting fails, saying why."""
    alice = await online(server_without_pep, clients, "alice@localhost")
    bob = await online(server_without_pep, clients, "bob@localhost")
    with pytest.raises(OmemoUnavailable) as refused:
        await alice.send("bob@localhost", "secret")
    assert str(refused.value).startswith("OMEMO is not available: ")
    assert str(refused.value).endswith("; pass encrypted=False to send unencrypted")
    inbox = bob.messages()
    await alice.send("bob@localhost", "plain on purpose", encrypted=False)
    got = await next_of(inbox)
    assert (got.text, got.encrypted) == ("plain on purpose", False)


async def test_a_message_that_could_not_be_decrypted_yet_is_read_at_the_next_login(
        chat_server: Server, clients: list[Client], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A login whose OMEMO set-up fails says so for each message that arrives, and does not catch
    up past them: the next login reads them from the archive."""
    directory = tmp_path / "alice"
    alice = await online(chat_server, clients, "alice@localhost", data_dir=directory)
    await alice.close()
    bob = await online(chat_server, clients, "bob@localhost")
    sent = await bob.send("alice@localhost", "while you were away")

    async def refused(self: Omemo) -> None:
        raise OMEMOException("the server refused to store our keys")

    with monkeypatch.context() as patched:
        patched.setattr(Omemo, "_set_up", refused)
        failing = make_client(chat_server, "alice@localhost", data_dir=directory)
        clients.append(failing)
        inbox = failing.messages()
        await failing.connect()
        told = await next_of(inbox)
        assert (told.id, told.text) == (sent, None) and told.undecryptable is not None
        await failing.caught_up()
        await failing.close()
    again = make_client(chat_server, "alice@localhost", data_dir=directory)
    clients.append(again)
    inbox = again.messages()
    await again.connect()
    got = await next_of(inbox)
    assert (got.id, got.text, got.undecryptable) == (sent, "while you were away", None)


async def set_key_access(client: Client, access_model: str) -> None:
    """XEP-0060 §8.2: who may fetch ``client``'s OMEMO device lists (``presence``: its contacts only)."""
    form = DataForm("submit", (Field("FORM_TYPE", "hidden", values=(NODE_CONFIG,)),
                               Field("pubsub#access_model", values=(access_model,))))
    for namespace in (OLDMEMO, TWOMEMO):
        await client.iq(element(qname(ns.CLIENT, "iq"), {"type": "set"},
                                children=[Configure(device_list_node(namespace), form).to_xml()]))


async def sent_with_keys_hidden(server: Server, clients: list[Client], directory: Path,
                                text: str) -> tuple[Client, Message]:
    """alice sends ``text`` to bob while he is away, with her device lists hidden from him; bob
    logs in (state in ``directory``), catches up and logs out. alice, and what bob was told."""
    bob = await online(server, clients, "bob@localhost", data_dir=directory)
    await bob.close()
    alice = await online(server, clients, "alice@localhost")
    await set_key_access(alice, "presence")
    sent = await alice.send("bob@localhost", text)
    hidden = make_client(server, "bob@localhost", data_dir=directory)
    clients.append(hidden)
    inbox = hidden.messages()
    await hidden.connect()
    told = await next_of(inbox)
    assert told.id == sent
    await hidden.caught_up()
    await hidden.close()
    await set_key_access(alice, "open")
    return alice, told


async def test_a_message_whose_sender_hides_the_keys_is_read_once_they_can_be_fetched(
        chat_server: Server, clients: list[Client], tmp_path: Path) -> None:
    """The sender's device list cannot be fetched (only its contacts may): a reason that may pass,
    so the catch-up does not move past the message, and the next login reads it."""
    directory = tmp_path / "bob"
    _, told = await sent_with_keys_hidden(chat_server, clients, directory, "can you read me?")
    assert told.text is None and "SenderNotFound" in (told.undecryptable or "")
    again = make_client(chat_server, "bob@localhost", data_dir=directory)
    clients.append(again)
    inbox = again.messages()
    await again.connect()
    got = await next_of(inbox)
    assert (got.id, got.text, got.undecryptable) == (told.id, "can you read me?", None)


async def test_a_message_that_stays_undecryptable_is_given_up(
        chat_server: Server, clients: list[Client], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tried again only for messages.RETRY_FOR after it was sent: here none, so the catch-up moves on."""
    monkeypatch.setattr(messages, "RETRY_FOR", timedelta(0))
    directory = tmp_path / "bob"
    alice, _ = await sent_with_keys_hidden(chat_server, clients, directory, "never read")
    later = await alice.send("bob@localhost", "read this")
    again = make_client(chat_server, "bob@localhost", data_dir=directory)
    clients.append(again)
    inbox = again.messages()
    await again.connect()
    got = await next_of(inbox)
    assert (got.id, got.text) == (later, "read this")
    await again.caught_up()
    assert [m.text for m in again.store.history(alice.account)] == ["read this"]


async def test_a_first_message_is_read_although_our_new_bundle_could_not_be_published(
        chat_server: Server, clients: list[Client], tmp_path: Path) -> None:
    """Reading the first message of a session uses up one of our pre keys, and python-omemo then
    publishes our bundle without it. When that fails (here the link goes silent), the message was
    decrypted all the same and is shown: it could not be decrypted a second time."""
    host, port = chat_server.bound["c2s"][0]
    proxy = await Proxy(host, port).start()
    try:
        bob = Client("bob@localhost", PASSWORD, host="127.0.0.1", port=proxy.port, verify=False,
                     data_dir=tmp_path / "bob", timeout=2, backoff=(0.05, 0.5))
        clients.append(bob)
        await bob.connect()
        inbox = bob.messages()
        alice = await online(chat_server, clients, "alice@localhost")
        await bob.omemo.devices("alice@localhost")  # known: reading her message fetches nothing
        published = await pre_keys(alice, bob)
        events = bob.events()
        proxy.swallowing = True
        sent = await alice.send("bob@localhost", "hello bob")
        got = await next_of(inbox)
        assert (got.id, got.text, got.undecryptable) == (sent, "hello bob", None)
        # Published at the next login: no one else starts a session with the used pre key.
        await admin.request(chat_server.config.data_dir, "kick", jid=str(bob.jid))
        proxy.swallowing = False
        await next_of(events, lambda event: isinstance(event, Connected))
        sent = await alice.send("bob@localhost", "and again")
        got = await next_of(inbox)
        assert (got.id, got.text) == (sent, "and again")
        assert await pre_keys(alice, bob) != published
    finally:
        await proxy.stop()


async def pre_keys(reader: Client, owner: Client) -> set[str]:
    """The ids of the pre keys in ``owner``'s legacy OMEMO bundle, as ``reader`` fetches it."""
    bundle = await published_bundle(reader, owner, OLDMEMO)
    return {key.get("preKeyId") or "" for key in offered_pre_keys(bundle, OLDMEMO)}


def offered_pre_keys(bundle: Element, namespace: str) -> Element:
    """The element of a published bundle that holds its pre keys."""
    offered = bundle.find(f"{{{namespace}}}prekeys")
    assert offered is not None
    return offered


async def published_bundle(reader: Client, owner: Client, namespace: str) -> Element:
    """``owner``'s bundle of ``namespace``, as ``reader`` fetches it."""
    place = bundle_place(namespace, (await owner.omemo.own_device()).id)
    items = await Pep(reader).items(owner.account, place.node, item_id=place.item)
    assert items and items[0].payload is not None
    return items[0].payload


async def offer_one_pre_key(owner: Client, namespace: str, key: Element | None = None) -> Element:
    """Publish ``owner``'s bundle of ``namespace`` with one pre key only, as if the others had
    been taken meanwhile: whoever starts a session with it now takes that one. It is ``key`` (as
    an earlier bundle offered it) if given, else the first the bundle offers now; it is returned."""
    bundle = await published_bundle(owner, owner, namespace)
    offered = offered_pre_keys(bundle, namespace)
    assert len(offered) > 1
    kept = key if key is not None else offered[0]
    for other in list(offered):
        offered.remove(other)
    offered.append(kept)
    place = bundle_place(namespace, (await owner.omemo.own_device()).id)
    await Pep(owner).publish(place.node, place.item, bundle, place.options, optional=frozenset({MAX_ITEMS}))
    return kept


async def two_senders_take_one_pre_key(server: Server, clients: list[Client], directory: Path,
                                       namespace: str) -> tuple[Client, Element, list[str], list[Message]]:
    """alice and carol fetch bob's bundle at the same time and take the same pre key (the only
    one it offers) to start their sessions with him, while he is away; then he logs in (state
    in ``directory``). bob's client, that pre key, the ids sent, and the messages bob got."""
    await add_user(server, "carol", PASSWORD)
    settings = OmemoSettings(namespaces=(namespace,))
    bob = await online(server, clients, "bob@localhost", data_dir=directory, omemo=settings)
    taken = await offer_one_pre_key(bob, namespace)
    await bob.close()
    sent = []
    for sender, text in (("alice@localhost", "from alice"), ("carol@localhost", "from carol")):
        client = await online(server, clients, sender, omemo=settings)
        sent.append(await client.send("bob@localhost", text))
        await client.acknowledged(sent[-1])
    again = make_client(server, "bob@localhost", data_dir=directory, omemo=settings)
    clients.append(again)
    inbox = again.messages()
    await again.connect()
    return again, taken, sent, [await next_of(inbox) for _ in sent]


@pytest.mark.parametrize("namespace", [OLDMEMO, TWOMEMO], ids=["legacy", "omemo2"])
async def test_two_senders_that_took_the_same_pre_key_are_both_read(chat_server: Server, clients: list[Client],
                                                                     tmp_path: Path, namespace: str) -> None:
    """bob reads alice's message first, which uses the pre key up, and carol's all the same; his
    bundle offers a full set of pre keys again at once, without that one."""
    bob, taken, sent, got = await two_senders_take_one_pre_key(chat_server, clients, tmp_path / "bob", namespace)
    assert [(m.id, m.text, m.undecryptable) for m in got] == [(sent[0], "from alice", None),
                                                               (sent[1], "from carol", None)]
    offered = [key.text for key in offered_pre_keys(await published_bundle(bob, bob, namespace), namespace)]
    assert len(offered) == 100 and taken.text not in offered


async def test_a_used_pre_key_is_deleted_once_kept_long_enough(chat_server: Server, clients: list[Client],
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kept for no time at all, a pre key goes with the first message that used it (X3DH §4.2
    wants it deleted): the second sender's first message cannot be read."""
    monkeypatch.setattr(used_pre_keys, "USED_PRE_KEYS_KEPT_FOR", 0.0)
    _, _, sent, got = await two_senders_take_one_pre_key(chat_server, clients, tmp_path / "bob", OLDMEMO)
    assert [(m.id, m.text) for m in got] == [(sent[0], "from alice"), (sent[1], None)]
    assert "KeyExchangeFailed" in (got[1].undecryptable or "")


async def test_a_used_pre_key_kept_long_enough_is_deleted_at_the_next_login(
        chat_server: Server, clients: list[Client], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once its time is up (here at once), bob's next login deletes the pre key alice and carol
    took: dave, who takes it only now from a bundle that still offers it, is not read."""
    directory = tmp_path / "bob"
    bob, taken, _, got = await two_senders_take_one_pre_key(chat_server, clients, directory, OLDMEMO)
    assert [m.text for m in got] == ["from alice", "from carol"]
    await offer_one_pre_key(bob, OLDMEMO, taken)
    await bob.close()
    monkeypatch.setattr(used_pre_keys, "USED_PRE_KEYS_KEPT_FOR", 0.0)
    await add_user(chat_server, "dave", PASSWORD)
    dave = await online(chat_server, clients, "dave@localhost", omemo=OmemoSettings(namespaces=(OLDMEMO,)))
    sent = await dave.send("bob@localhost", "from dave")
    await dave.acknowledged(sent)
    again = make_client(chat_server, "bob@localhost", data_dir=directory, omemo=OmemoSettings(namespaces=(OLDMEMO,)))
    clients.append(again)
    inbox = again.messages()
    await again.connect()
    late = await next_of(inbox)
    assert (late.id, late.text) == (sent, None) and "KeyExchangeFailed" in (late.undecryptable or "")
