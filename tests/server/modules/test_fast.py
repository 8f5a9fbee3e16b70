"""XEP-0484 FAST tokens: issuing, one-message logins, rotation, invalidation, revocation, and every
way a token login fails (wrong, expired, replayed, revoked, wrong channel binding, old password)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.modules.fast import STORE, FastTokens
from schnack.xmpp import ht
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads import sasl2 as payload
from schnack.xmpp.sasl import derive_credentials
from schnack.xmpp.xml import serialize

from ...harness import add_user, running
from ..sasl2_wire import (
    AGENT,
    BINDINGS,
    END_POINT,
    PASSWORD,
    Wire,
    bind,
    failure,
    issued,
    request_token,
    scram,
    token_login,
)

ALICE = JID.parse("alice@localhost")
LIFETIME = 3600


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(tmp_path, modules={"e2e": {"policy": "optional"}, "fast": {"lifetime": LIFETIME}}) as srv:
        await add_user(srv, "alice", PASSWORD)
        yield srv


def module(server: Server) -> FastTokens:
    found = server.modules["fast"]
    assert isinstance(found, FastTokens)
    return found


async def wire(server: Server, **conn: object) -> Wire:
    opened = Wire(server, **conn)
    await opened.open()
    return opened


async def token_for(server: Server, mechanism: str = "HT-SHA-256-EXPR") -> str:
    """Log in with the password and ask for a token."""
    out = await scram(await wire(server), request_token(mechanism), bind())
    return issued(out[0]).token


async def token_for_password(server: Server, password: str) -> str:
    out = await scram(await wire(server), request_token(), password=password)
    return issued(out[0]).token


async def login(server: Server, request: Element, **conn: object) -> list[Element]:
    return await (await wire(server, **conn)).send(request)


def success(out: list[Element]) -> payload.Success:
    assert out and out[0].tag == payload.SUCCESS, [serialize(el) for el in out]
    return payload.Success.from_xml(out[0])


async def record(server: Server) -> dict[str, object]:
    raw = await server.storage.maps.get("localhost", "alice", STORE, AGENT.id or "")
    assert raw is not None
    data: dict[str, object] = json.loads(raw)
    return data


async def edit_record(server: Server, slot: str, **changes: float) -> None:
    data = await record(server)
    entry = data[slot]
    assert isinstance(entry, dict)
    entry.update(changes)
    await server.storage.maps.set("localhost", "alice", STORE, AGENT.id or "", json.dumps(data).encode())


async def test_a_token_is_issued_on_request_and_only_its_hash_is_stored(server: Server) -> None:
    out = await scram(await wire(server), request_token(), bind())
    token = issued(out[0])
    assert len(token.token) > ht.BLOCK
    stored = await server.storage.maps.get("localhost", "alice", STORE, AGENT.id or "")
    assert stored is not None and token.token.encode() not in stored
    data = await record(server)
    new = data["new"]
    assert isinstance(new, dict) and new["key"] == hashlib.sha256(token.token.encode()).hexdigest()
    assert data["mechanism"] == "HT-SHA-256-EXPR" and data["software"] == "schnack"


async def test_a_token_logs_in_with_one_message_and_proves_the_server(server: Server) -> None:
    token = await token_for(server)
    out = await login(server, token_login(token, bind()))
    result = success(out)
    assert result.additional_data == ht.responder(ht.key_of(token), BINDINGS["tls-exporter"])
    assert JID.parse(result.authorization_identifier).bare == ALICE
    # A fresh token is not rotated.
    assert result.find("{urn:xmpp:fast:0}token") is None
    # Used once, it moved from the 'new' slot to 'current'.
    data = await record(server)
    assert data["new"] is None and data["current"] is not None


@pytest.mark.parametrize(
    ("request_args", "expected"),
    [
        ({"token": "x" * 96}, ("not-authorized", "unknown or revoked token")),
        ({"mechanism": "HT-SHA-256-NONE"}, ("not-authorized", "the token was issued for HT-SHA-256-EXPR")),
        ({"binding": b"another TLS channel".ljust(32)}, ("not-authorized", "unknown or revoked token")),
        ({"agent": payload.UserAgent("another-device")}, ("not-authorized", "unknown or revoked token")),
        ({"agent": None}, ("malformed-request", "a token login needs <user-agent id='...'/>")),
        ({"user": "bob"}, ("not-authorized", "unknown or revoked token")),
        ({"mechanism": "HT-SHA-256-UNIQ"}, ("invalid-mechanism",
                                            "HT-SHA-256-UNIQ needs tls-unique, which this connection lacks")),
    ],
)
async def test_token_logins_that_fail(server: Server, request_args: dict[str, object],
                                      expected: tuple[str, str]) -> None:
    token = await token_for(server)
    args = {"token": token, **request_args}
    assert failure(await login(server, token_login(**args))) == expected  # type: ignore[arg-type]
    # The token itself still works.
    success(await login(server, token_login(token, count=99)))


async def test_a_token_bound_to_the_channel_fails_on_another_channel(server: Server) -> None:
    """A client that sees another certificate than the server's (a machine in the middle) fails."""
    token = await token_for(server, "HT-SHA-256-ENDP")
    seen = b"O" * 32
    assert seen != END_POINT
    out = await login(server, token_login(token, mechanism="HT-SHA-256-ENDP", binding=seen))
    assert failure(out) == ("not-authorized", "unknown or revoked token")
    success(await login(server, token_login(token, mechanism="HT-SHA-256-ENDP", binding=END_POINT)))


async def test_an_expired_token_fails_with_credentials_expired(server: Server) -> None:
    token = await token_for(server)
    await edit_record(server, "new", expiry=1.0)
    assert failure(await login(server, token_login(token))) == ("credentials-expired", "the token expired")
    assert failure(await login(server, token_login(token, count=2)))[1] == "unknown or revoked token"


async def test_a_replayed_count_fails(server: Server) -> None:
    token = await token_for(server)
    success(await login(server, token_login(token, count=5)))
    for count in (5, 3):
        assert failure(await login(server, token_login(token, count=count))) == (
            "not-authorized", f"count {count} was used already"
        )
    success(await login(server, token_login(token, count=6)))


async def test_after_a_password_change_tokens_fail(server: Server) -> None:
    token = await token_for(server)
    await server.storage.accounts.set_credentials("localhost", "alice", derive_credentials("new password"))
    # Listing already leaves them out (and deletes them).
    assert await module(server).devices("localhost", "alice") == []
    assert failure(await login(server, token_login(token)))[0] == "not-authorized"
    assert await server.storage.maps.items("localhost", "alice", STORE) == {}
    # A token that is used before anyone lists them fails with credentials-expired.
    token = await token_for_password(server, "new password")
    await server.storage.accounts.set_credentials("localhost", "alice", derive_credentials("newer"))
    assert failure(await login(server, token_login(token))) == (
        "credentials-expired", "the password changed since the token was issued"
    )


async def test_rotation_after_half_the_lifetime_keeps_the_old_token_until_the_new_one_is_used(server: Server) -> None:
    token = await token_for(server)
    success(await login(server, token_login(token, count=1)))
    await edit_record(server, "current", issued=1.0)
    rotated = issued(success(await login(server, token_login(token, count=2))).to_xml())
    assert rotated.token != token
    # §3.5: a client that never got the new token still logs in with the old one, and gets another
    # new one, which replaces the unused one.
    again = issued(success(await login(server, token_login(token, count=3))).to_xml())
    assert failure(await login(server, token_login(rotated.token)))[1] == "unknown or revoked token"
    success(await login(server, token_login(again.token, count=1)))
    # Once the new token is used, the old one ends.
    assert failure(await login(server, token_login(token, count=4)))[1] == "unknown or revoked token"


async def test_invalidate_ends_the_token_without_a_new_one(server: Server) -> None:
    token = await token_for(server)
    out = await login(server, token_login(token, invalidate=True))
    assert success(out).find("{urn:xmpp:fast:0}token") is None
    assert failure(await login(server, token_login(token, count=2)))[1] == "unknown or revoked token"
    # Asking for a token in the same request gets one.
    token = await token_for(server)
    out = await login(server, token_login(token, request_token(), invalidate=True))
    fresh = issued(out[0]).token
    success(await login(server, token_login(fresh)))


async def test_invalidate_also_ends_a_rotated_token_not_used_yet(server: Server) -> None:
    """§3.6: logging out with the token in use leaves the device no token, not even the one a
    rotation (§3.5) issued and the client has not used."""
    token = await token_for(server)
    success(await login(server, token_login(token, count=1)))
    await edit_record(server, "current", issued=1.0)
    rotated = issued(success(await login(server, token_login(token, count=2))).to_xml())
    out = await login(server, token_login(token, count=3, invalidate=True))
    assert success(out).find("{urn:xmpp:fast:0}token") is None
    assert failure(await login(server, token_login(rotated.token)))[1] == "unknown or revoked token"
    assert await server.storage.maps.get("localhost", "alice", STORE, AGENT.id or "") is None


async def test_revoking_a_device_disconnects_it_and_its_token_fails(server: Server) -> None:
    token = await token_for(server)
    connected = await wire(server)
    success(await connected.send(token_login(token, bind())))
    other = await wire(server)
    await scram(other, bind(), agent=payload.UserAgent("laptop"))
    assert [d["id"] for d in await module(server).devices("localhost", "alice")] == [AGENT.id]
    reply = await server.hooks.fire("admin/tokens", {"action": "revoke", "jid": "alice@localhost", "device": AGENT.id})
    assert reply == {"ok": True, "revoked": 1}
    assert connected.stream.closed and not other.stream.closed
    assert failure(await login(server, token_login(token, count=2))) == ("not-authorized", "unknown or revoked token")
    # The password still works.
    assert success(await scram(await wire(server), bind())).authorization_identifier.startswith("alice@localhost/")


@pytest.mark.parametrize(
    ("admin_request", "error"),
    [
        ({"action": "list", "jid": "not a jid@@"}, "invalid JID"),
        ({"action": "list", "jid": "carol@localhost"}, "no such account: carol@localhost"),
        ({"action": "list", "jid": "alice@elsewhere.example"}, "is not an account of this server"),
        ({"action": "revoke", "jid": "alice@localhost", "device": "unknown"}, "has no token for device unknown"),
        ({"action": "rename", "jid": "alice@localhost"}, "unknown tokens action 'rename'"),
    ],
)
async def test_admin_requests_that_fail(server: Server, admin_request: dict[str, str], error: str) -> None:
    reply = await server.hooks.fire("admin/tokens", admin_request)
    assert reply["ok"] is False and error in reply["error"]


async def test_tokens_go_with_the_account(server: Server) -> None:
    await token_for(server)
    assert await server.storage.maps.items("localhost", "alice", STORE)
    assert await server.delete_account("localhost", "alice")
    assert await server.storage.maps.items("localhost", "alice", STORE) == {}


async def test_the_device_unused_longest_makes_room(tmp_path: Path) -> None:
    async with running(tmp_path, modules={"fast": {"max_devices": 2}}) as srv:
        await add_user(srv, "alice", PASSWORD)
        tokens = {}
        for name in ("old", "middle", "new"):
            agent = payload.UserAgent(name)
            out = await scram(await wire(srv), request_token(), agent=agent)
            tokens[name] = issued(out[0]).token
        assert sorted(await srv.storage.maps.items("localhost", "alice", STORE)) == ["middle", "new"]
        assert failure(await login(srv, token_login(tokens["old"], agent=payload.UserAgent("old"))))[0] == \
            "not-authorized"
        success(await login(srv, token_login(tokens["middle"], agent=payload.UserAgent("middle"))))


async def test_a_huge_user_agent_id_is_refused(server: Server) -> None:
    out = await scram(await wire(server), request_token(), agent=payload.UserAgent("x" * 129))
    assert failure(out) == ("malformed-request", "a user-agent id has at most 128 characters")
    assert await server.storage.maps.items("localhost", "alice", STORE) == {}
