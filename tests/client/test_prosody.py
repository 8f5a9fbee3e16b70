"""Our client against another server: a private Prosody (Debian's package), started per test.

The client must work with any XMPP server, not only with ours: login with the certificate
verified, and two clients exchanging messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.servers import DOMAIN, ProsodyDriver, Target
from schnack.client import AuthenticationError, Client

from ..conftest import require_service
from .conftest import PASSWORD, next_of


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
