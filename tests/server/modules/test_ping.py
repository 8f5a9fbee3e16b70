"""XEP-0199 XMPP Ping: the server answers for its domains and for its accounts' bare JIDs."""

from __future__ import annotations

import pytest

from schnack.server.app import Server
from schnack.xmpp import ns

from .messaging import condition, login


def ping(to: str | None) -> str:
    address = f" to='{to}'" if to else ""
    return f"<iq type='get' id='p'{address}><ping xmlns='{ns.PING}'/></iq>"


@pytest.mark.parametrize("to", [None, "localhost", "alice@localhost", "bob@localhost"])
async def test_the_server_answers_for_itself_and_its_accounts(server: Server, to: str | None) -> None:
    await (await login(server, "bob@localhost/desk")).close()  # an account with no session
    alice = await login(server, "alice@localhost/phone")
    await alice.send(ping(to))
    (answer,) = await alice.expect()
    assert answer.get("type") == "result" and answer.get("id") == "p"


async def test_an_account_that_does_not_exist_is_service_unavailable(server: Server) -> None:
    """RFC 6121 §8.5.1: no pong on behalf of an account there is not."""
    alice = await login(server, "alice@localhost/phone")
    await alice.send(ping("nobody@localhost"))
    (answer,) = await alice.expect()
    assert condition(answer) == "service-unavailable"
