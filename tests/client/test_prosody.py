"""Our client against another server: a private Prosody (Debian's package), started per test.

The client must work with any XMPP server, not only with ours: login with the certificate
verified, and two clients exchanging messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.servers import DOMAIN, ProsodyDriver, Target
from schnack.client import AuthenticationError, ChatStateChange, Client, Receipt
from schnack.xmpp.jid import JID

from ..conftest import require_service
from .conftest import PASSWORD, WAIT, next_of


@pytest.fixture
def prosody() -> Iterator[tuple[Target, Path]]:
    """A running Prosody with alice and bob; its address and its certificate."""
    require_service(ProsodyDriver.available(), "Prosody is not installed (Debian package prosody)")
    driver = ProsodyDriver()
    target = driver.start(["alice", "bob"], PASSWORD)
    try:
        yield target, driver.dir / "certs" / f"{DOMAIN}.crt"
    finally:
        driver.stop()


def client(prosody: tuple[Target, Path], user: str, password: str = PASSWORD) -> Client:
    target, cert = prosody
    return Client(f"{user}@{target.domain}/test", password, host=target.host, port=target.port, verify=cert)


async def test_login_and_messages_through_prosody(prosody: tuple[Target, Path]) -> None:
    async with client(prosody, "alice") as alice, client(prosody, "bob") as bob:
        assert alice.jid.bare == alice.account and alice.mechanism is not None
        assert alice.mechanism.startswith("SCRAM-")
        alice_inbox, bob_inbox = alice.messages(), bob.messages()
        sent = await alice.send(bob.jid, "hello from schnack", encrypted=False)
        got = await next_of(bob_inbox)
        assert (got.sender, got.text, got.id) == (alice.jid, "hello from schnack", sent)
        await bob.send(alice.jid.bare, "hello back", encrypted=False)
        reply = await next_of(alice_inbox)
        assert (reply.sender, reply.text) == (bob.jid, "hello back")


async def test_wrong_password_on_prosody(prosody: tuple[Target, Path]) -> None:
    with pytest.raises(AuthenticationError) as refused:
        await client(prosody, "alice", "wrong").connect()
    assert refused.value.condition == "not-authorized"


async def test_receipts_markers_corrections_and_states_through_prosody(prosody: tuple[Target, Path]) -> None:
    async with client(prosody, "alice") as alice, client(prosody, "bob") as bob:
        receipts, bob_inbox, alice_states = alice.receipts(), bob.messages(), alice.chat_states()
        sent = await alice.send(bob.jid.bare, "through prosody", encrypted=False)
        got = await next_of(bob_inbox)
        assert await next_of(receipts) == Receipt(bob.jid.bare, sent, "delivered")
        await bob.mark_read(alice.jid.bare, got.id or "")
        assert await next_of(receipts) == Receipt(bob.jid.bare, sent, "read")
        assert await bob.typing(alice.jid, "composing")
        assert await next_of(alice_states) == ChatStateChange(bob.jid, "composing")
        await alice.correct(bob.jid.bare, sent, "through prosody, corrected", encrypted=False)
        corrected = await next_of(bob_inbox)
        assert (corrected.text, corrected.replaces) == ("through prosody, corrected", sent)


async def test_carbons_and_the_archive_catch_up_through_prosody(prosody: tuple[Target, Path], tmp_path: Path) -> None:
    target, cert = prosody

    def device(name: str) -> Client:
        return Client(f"alice@{target.domain}/{name}", PASSWORD, host=target.host, port=target.port, verify=cert,
                      data_dir=tmp_path / name)

    # The tablet has been used before (its keys are published), then went away.
    async with device("tablet") as tablet:
        await tablet.caught_up(timeout=WAIT)
    async with device("desk") as desk, device("phone") as phone, client(prosody, "bob") as bob:
        desk_inbox, bob_inbox = desk.messages(), bob.messages()
        conversation = []
        for n in range(3):
            await phone.send(bob.jid.bare, f"alice {n}")
            copy = await next_of(desk_inbox)
            assert (copy.outgoing, copy.text, copy.encrypted) == (True, f"alice {n}", True)
            await next_of(bob_inbox)
            await bob.send(phone.jid, f"bob {n}")
            received = await next_of(desk_inbox)
            assert (received.outgoing, received.text) == (False, f"bob {n}")
            conversation += [("out", f"alice {n}"), ("in", f"bob {n}")]
        assert [(m.direction, m.text) for m in desk.store.history(bob.jid)] == conversation
    async with device("tablet") as tablet:
        await tablet.caught_up(timeout=WAIT)
        assert [(m.direction, m.text) for m in tablet.store.history(JID.parse(f"bob@{target.domain}"))] == conversation
