"""OMEMO between two of our clients through another server: a private Prosody (Debian's package).

What the client publishes and fetches is plain PEP with publish-options, which Prosody's
mod_pep implements on its own terms: this proves the client does not depend on schnack.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.servers import DOMAIN, ProsodyDriver, Target
from schnack.client import Client
from schnack.client.omemo import OLDMEMO, TWOMEMO, NoOmemoDevices, OmemoSettings

from ...conftest import require_service
from ..conftest import PASSWORD, next_of


@pytest.fixture
def prosody() -> Iterator[tuple[Target, Path]]:
    """A running Prosody with alice, bob and carol; its address and its certificate."""
    require_service(ProsodyDriver.available(), "Prosody is not installed (Debian package prosody)")
    driver = ProsodyDriver()
    target = driver.start(["alice", "bob", "carol"], PASSWORD)
    try:
        yield target, driver.dir / "certs" / f"{DOMAIN}.crt"
    finally:
        driver.stop()


def client(prosody: tuple[Target, Path], user: str, settings: OmemoSettings | None = None) -> Client:
    target, cert = prosody
    return Client(f"{user}@{target.domain}/test", PASSWORD, host=target.host, port=target.port, verify=cert,
                  omemo=settings)


@pytest.mark.parametrize("versions", [(OLDMEMO,), (TWOMEMO,)], ids=["legacy", "omemo2"])
async def test_encrypted_messages_through_prosody(prosody: tuple[Target, Path], versions: tuple[str, ...]) -> None:
    settings = OmemoSettings(namespaces=versions)
    async with client(prosody, "alice", settings) as alice, client(prosody, "bob", settings) as bob:
        alice_inbox, bob_inbox = alice.messages(), bob.messages()
        sent = await alice.send(bob.account, "hello through prosody")
        got = await next_of(bob_inbox)
        assert (got.sender, got.id, got.text, got.encrypted) == (alice.jid, sent, "hello through prosody", True)
        assert got.element.find(f"{{{versions[0]}}}encrypted") is not None
        own = await alice.omemo.own_device()
        assert got.device is not None and got.device.fingerprint == own.fingerprint
        await bob.send(alice.account, "and back")
        reply = await next_of(alice_inbox)
        assert (reply.sender, reply.text, reply.encrypted) == (bob.jid, "and back", True)


async def test_no_devices_on_prosody(prosody: tuple[Target, Path]) -> None:
    async with client(prosody, "alice") as alice:
        with pytest.raises(NoOmemoDevices) as refused:
            await alice.send(f"carol@{DOMAIN}", "secret")
        # Prosody does not tell a stranger whether carol's node exists: it answers forbidden.
        assert str(refused.value) == (f"carol@{DOMAIN} has no OMEMO devices (its server answered forbidden); "
                                      "pass encrypted=False to send unencrypted")
