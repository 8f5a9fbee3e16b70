"""profanity 0.13 (Debian, libstrophe), driven in tmux, chatting with our client through schnack.

alice uses profanity; bob uses our client (``schnack.client.Client``). profanity logs in over
STARTTLS, trusting the server's self-signed certificate as its CA (``tls.certpath``, the domain
still checked), and the two chat 1:1 in plaintext both ways. Then OMEMO
(``eu.siacs.conversations.axolotl``, the version profanity speaks): profanity makes its keys
(``/omemo gen``) and publishes them with open access (it asks for that only because the domain
lists ``pubsub#publish-options``); each side verifies the other's fingerprint as the other shows
it (profanity's default trust mode is manual) and reads what the other encrypted. With
profanity closed, bob sends an encrypted message: it waits in offline storage as ciphertext and
shows in profanity after its next start and login. The server's database never holds the text of
an OMEMO message.

Under schnack's default end-to-end policy, profanity shows the server's sentence for a plaintext
message it refused. Without the certificate as a CA, profanity stops the login and asks whether
to accept it. Screens and profanity's log go to ``test-artifacts/profanity/<test>/``.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schnack.client import Client
from schnack.client.features.messages import Message
from schnack.client.omemo import OLDMEMO, Trust
from schnack.server.app import Server
from schnack.server.modules.e2e import REFUSAL
from schnack.server.modules.pep import Pep
from schnack.server.modules.sm import SmState
from schnack.server.sessions import Session
from schnack.server.storage.base import RosterItem
from schnack.xmpp.jid import JID
from schnack.xmpp.xml import serialize

from ..conftest import require_service
from ..harness import DOMAIN, add_user, running
from .profanity import Profanity, available, fingerprint

pytestmark = pytest.mark.asyncio

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "profanity"
PASSWORDS = {"alice": "alice's long passphrase", "bob": "bob's long passphrase"}
ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
DEVICE_LIST = f"{OLDMEMO}.devicelist"
WAIT = 30.0
# The OMEMO texts: none of them may ever be in the server's files.
SECRETS = ("the spare key is under the third flowerpot", "noted, I will water the plants on friday",
           "the alarm code changed to 4711 while you were away")  # fmt: skip
ENCRYPTED = f'<encrypted xmlns="{OLDMEMO}">'.encode()


@pytest.fixture
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    """The server with the end-to-end policy the test names (indirect parameter), by default
    "optional": plaintext is allowed, so that the plain chat can be tried."""
    require_service(*available())
    policy = getattr(request, "param", "optional")
    async with running(tmp_path, listen=True, modules={"e2e": {"policy": policy}}) as srv:
        for name, password in PASSWORDS.items():
            await add_user(srv, name, password)
        await srv.storage.roster.set_item(DOMAIN, "alice", RosterItem(BOB, "Bob", "both"))
        await srv.storage.roster.set_item(DOMAIN, "bob", RosterItem(ALICE, "Alice", "both"))
        yield srv


def _profanity(request: pytest.FixtureRequest, server: Server, tmp_path: Path, certificate: Path | None) -> Profanity:
    """alice's profanity, its screens saved under the test's name."""
    host, port = server.bound["c2s"][0]
    artifacts = ARTIFACTS / request.node.name.removeprefix("test_").partition("[")[0]
    shutil.rmtree(artifacts, ignore_errors=True)
    return Profanity(tmp_path / "profanity", artifacts, ALICE, PASSWORDS["alice"], host, port, certificate)


@pytest.fixture
async def profanity(request: pytest.FixtureRequest, server: Server, tmp_path: Path) -> AsyncIterator[Profanity]:
    """profanity trusting the server's self-signed certificate as its CA."""
    user = _profanity(request, server, tmp_path, server.tls.cert_path)
    try:
        yield user
    finally:
        await user.stop()


@pytest.fixture
async def untrusting(request: pytest.FixtureRequest, server: Server, tmp_path: Path) -> AsyncIterator[Profanity]:
    """profanity with only the system's CAs, which do not know the server's self-signed certificate."""
    user = _profanity(request, server, tmp_path, None)
    try:
        yield user
    finally:
        await user.stop()


@pytest.fixture
async def bob(server: Server, tmp_path: Path) -> AsyncIterator[Client]:
    host, port = server.bound["c2s"][0]
    client = Client(f"{BOB}/laptop", PASSWORDS["bob"], host=host, port=port, verify=str(server.tls.cert_path),
                    direct_tls=False, reconnect=False, data_dir=tmp_path / "bob")  # fmt: skip
    async with client:
        yield client


async def next_message(inbox: AsyncIterator[Message]) -> Message:
    async with asyncio.timeout(WAIT):
        async for message in inbox:
            if message.text is not None or message.undecryptable is not None:
                return message
    raise AssertionError("the message feed ended")


async def published_device(server: Server, device_id: int) -> None:
    """Wait until alice's legacy OMEMO device list names ``device_id``, and check it is open."""
    pep = server.modules["pep"]
    assert isinstance(pep, Pep)
    store = pep.store
    owner = JID.parse(ALICE)
    async with asyncio.timeout(WAIT):
        while True:
            node = await store.node(owner, DEVICE_LIST)
            last = await store.last(owner, node) if node is not None else None
            if node is not None and last is not None and f'id="{device_id}"' in serialize(last.payload):
                # profanity asked for open access with publish-options (XEP-0060 §7.1.5).
                assert node.config.access_model == "open", node.config
                return
            await asyncio.sleep(0.1)


async def known_fingerprints(profanity: Profanity, jid: str) -> list[str]:
    """The fingerprints profanity knows for ``jid`` (``/omemo fingerprint``), once it fetched any:
    it fetches the device list and bundles in the background after ``/omemo start``."""
    async with asyncio.timeout(WAIT):
        while True:
            await profanity.type(f"/omemo fingerprint {jid}")
            answer = "(There is no known fingerprints for|You can trust it with)"
            shown = await profanity.wait_for(answer, "6-fingerprints", regex=True)
            if shown.group(1).startswith("You can"):
                screen = await profanity.screen()
                prefix = f"{jid}'s OMEMO fingerprint: "
                return [fingerprint(line.split(prefix)[1]) for line in screen.splitlines() if prefix in line]
            await profanity.type("/clear")
            await asyncio.sleep(0.5)


async def all_acknowledged(session: Session) -> None:
    """Wait until the client acknowledged every stanza sent to ``session`` (XEP-0198 §4)."""
    state = session.slot(SmState)
    assert state.enabled, "profanity (libstrophe) enables stream management"
    async with asyncio.timeout(WAIT):
        while True:
            if not state.queue:
                return
            await asyncio.sleep(0.1)


async def offline_payloads(server: Server) -> list[bytes]:
    page = await server.storage.archive.query(DOMAIN, "alice", "offline")
    return [item.payload for item in page.items]


async def test_profanity_logs_in_chats_plain_and_with_omemo_and_gets_offline_messages(
    server: Server, profanity: Profanity, bob: Client
) -> None:
    inbox = bob.messages()
    await profanity.start()
    await profanity.type(f"/connect {ALICE}")
    await profanity.wait_for(f"{ALICE}/console logged in successfully", "1-logged-in")
    (alice_conn,) = [c for c in server.connections if c.stream is not None and c.stream.session is not None
                     and c.stream.session.username == "alice"]  # fmt: skip
    assert alice_conn.secure and not alice_conn.websocket  # STARTTLS on the c2s port
    assert alice_conn.stream.session is not None

    # Plaintext, both ways (the server's e2e policy is "optional" here).
    await profanity.type(f"/msg {BOB} hello bob, plain text from profanity")
    got = await next_message(inbox)
    assert (str(got.sender.bare), got.text, got.encrypted) == (ALICE, "hello bob, plain text from profanity", False)
    await bob.send(ALICE, "hello alice, plain text from schnack", encrypted=False)
    await profanity.wait_for("- Bob/laptop: hello alice, plain text from schnack", "2-plain-chat")

    # OMEMO keys for profanity (in its console window); its device list appears, with open access.
    await profanity.type("/win 1")
    await profanity.type("/omemo gen")
    generated = await profanity.wait_for(r"Your Device ID is (\d+)\.", "3-omemo-gen", regex=True)
    device_id = int(generated.group(1))
    await published_device(server, device_id)
    await profanity.type("/omemo fingerprint")
    shown = await profanity.wait_for(r"Your OMEMO fingerprint: ([0-9a-f-]+)", "4-own-fingerprint", regex=True)
    alice_key = fingerprint(shown.group(1))

    # bob verifies profanity's key as profanity shows it.
    (device,) = [d for d in await bob.omemo.devices(ALICE) if d.id == device_id]
    assert fingerprint(device.fingerprint) == alice_key
    assert (await bob.omemo.trust(ALICE, alice_key)).trust is Trust.VERIFIED

    # alice verifies bob's key as our client shows it, in the chat window with bob.
    bob_key = fingerprint((await bob.omemo.own_device()).fingerprint)
    await profanity.type("/win 2")
    await profanity.type("/omemo start")
    await profanity.wait_for(" [OMEMO] ", "5-omemo-started")
    listed = await known_fingerprints(profanity, BOB)
    assert bob_key in listed, listed
    await profanity.type(f"/omemo trust {BOB} {bob_key}")
    await profanity.wait_for(rf"{BOB}'s OMEMO fingerprint: {bob_key} \(trusted\)", "7-trusted", regex=True)

    # Encrypted, schnack to profanity: "~" marks an OMEMO message in profanity.
    await bob.send(ALICE, SECRETS[0])
    await profanity.wait_for(f"~ Bob/laptop: {SECRETS[0]}", "8-omemo-received")
    # Encrypted, profanity to schnack.
    await profanity.type(SECRETS[1])
    await profanity.wait_for(f"~ me: {SECRETS[1]}", "9-omemo-sent")
    reply = await next_message(inbox)
    assert (reply.text, reply.encrypted, reply.undecryptable) == (SECRETS[1], True, None)
    assert reply.device is not None and (reply.device.id, reply.device.trust) == (device_id, Trust.VERIFIED)
    assert reply.element.find(f"{{{OLDMEMO}}}encrypted") is not None

    # profanity closes its stream without a last <a/>: what it has not acknowledged when it quits
    # comes again from offline storage at its next login (XEP-0198 §4), so it quits once the
    # server's request for an ack (after ack_after_seconds) has been answered.
    await all_acknowledged(alice_conn.stream.session)
    await profanity.quit()
    # bob writes; the message waits encrypted in alice's offline storage.
    sent = await bob.send(ALICE, SECRETS[2])
    await bob.acknowledged(sent)
    (waiting,) = await offline_payloads(server)
    assert ENCRYPTED in waiting and SECRETS[2].encode() not in waiting

    # profanity starts again (its OMEMO state from disk) and shows it after login.
    await profanity.start()
    await profanity.type(f"/connect {ALICE}")
    # It may come before the roster does, so profanity names bob by JID or by his roster name.
    await profanity.wait_for(r"<< chat message: (Bob|bob@localhost)/laptop \(win 2\)", "10-offline-arrived", regex=True)
    await profanity.type("/win 2")
    await profanity.wait_for(f"~ (Bob|bob@localhost)/laptop: {SECRETS[2]}", "11-offline-message", regex=True)
    assert await offline_payloads(server) == []

    # alice's archive holds the OMEMO messages encrypted and the plain ones in the clear; no file
    # of the database (WAL included) holds any OMEMO text.
    page = await server.storage.archive.query(DOMAIN, "alice", "mam")
    payloads = [item.payload for item in page.items if b"<body>" in item.payload]
    assert sum(ENCRYPTED in p for p in payloads) == 3, payloads
    assert any(b"plain text from profanity" in p for p in payloads)
    raw = b"".join(p.read_bytes() for p in server.config.data_dir.glob("schnack.db*"))
    assert b"plain text from schnack" in raw  # the search finds what is there
    for text in SECRETS:
        assert text.encode() not in raw, text


@pytest.mark.parametrize("server", ["required"], indirect=True)
async def test_profanity_shows_why_the_default_policy_refuses_plaintext(server: Server, profanity: Profanity) -> None:
    """schnack's default end-to-end policy: profanity shows the server's sentence, and nothing is
    delivered or stored for bob."""
    await profanity.start()
    await profanity.type(f"/connect {ALICE}")
    await profanity.wait_for(f"{ALICE}/console logged in successfully", "1-logged-in")
    await profanity.type(f"/msg {BOB} plain text the server refuses")
    await profanity.wait_for(f"! Error from {BOB}: {REFUSAL}", "2-refused")
    assert await server.storage.archive.count(DOMAIN, "bob", "offline") == 0
    assert (await server.storage.archive.query(DOMAIN, "bob", "mam")).items == []


async def test_profanity_asks_before_it_accepts_a_self_signed_certificate(server: Server, untrusting: Profanity) -> None:
    """Without the certificate as a CA, profanity stops the login and asks; the user's answer
    ``/tls always`` keeps it (profanity's own list of trusted certificates) and the login goes on."""
    await untrusting.start()
    await untrusting.type(f"/connect {ALICE}")
    asked = await untrusting.wait_for("Use '/tls always' to accept this certificate permanently.", "1-asked")
    assert "TLS certificate verification failed: self-signed certificate" in asked.string
    assert not [c for c in server.connections if c.stream is not None and c.stream.session is not None]
    await untrusting.type("/tls always")
    await untrusting.wait_for(f"{ALICE}/console logged in successfully", "2-logged-in")
