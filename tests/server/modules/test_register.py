"""XEP-0077 in-band registration: before login, password change and account removal after."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.c2s import C2SStream
from schnack.server.modules.register import Register
from schnack.xmpp import ns
from schnack.xmpp.errors import StreamError
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.register import RegisterQuery
from schnack.xmpp.stanza import Stanza
from schnack.xmpp.xml import serialize

from ...harness import Client, MemoryConnection, add_user, connect, running

QUERY = f"{{{ns.REGISTER}}}query"
FEATURE = f"{{{ns.REGISTER_FEATURE}}}register"
CLOSE = f"{{{ns.FRAMING}}}close"


def condition(el: Element) -> str:
    """The defined condition of an error stanza."""
    assert el.get("type") == "error", serialize(el)
    error = el.find(f"{{{ns.CLIENT}}}error")
    assert error is not None
    return next(c.tag.rpartition("}")[2] for c in error if c.tag != f"{{{ns.STANZA_ERRORS}}}text")


def iq(kind: str, content: str = "", *, to: str | None = None, id: str | None = "r1") -> str:
    """A jabber:iq:register IQ with ``content`` in its query."""
    attrs = (f" id='{id}'" if id else "") + (f" to='{to}'" if to else "")
    return f"<iq type='{kind}'{attrs} xmlns='{ns.CLIENT}'><query xmlns='{ns.REGISTER}'>{content}</query></iq>"


def stream_error(el: Element) -> str:
    assert el.tag == f"{{{ns.STREAMS}}}error", serialize(el)
    return next(c.tag.rpartition("}")[2] for c in el if c.tag != f"{{{ns.STREAM_ERRORS}}}text")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """The default server with registration enabled."""
    async with running(tmp_path, modules={"enable": ["register"]}) as srv:
        yield srv


class Guest:
    """A client stream that has not logged in."""

    def __init__(self, server: Server, peer: str = "127.0.0.1:40000", *, secure: bool = True) -> None:
        self.conn = MemoryConnection(peer)
        self.conn.secure = secure
        self.stream = C2SStream(server, self.conn)

    async def open(self) -> Element:
        await self.stream.on_open(f"{{{ns.FRAMING}}}open", {"to": "localhost", "version": "1.0"}, None)
        return self.conn.out.pop()

    async def send(self, xml: str) -> Element:
        """Send one element; return the server's answer (a stanza or a stream error)."""
        self.conn.out.clear()
        try:
            await self.stream.on_element(parse_frame(xml.encode(), 10**6))
        except StreamError as err:
            self.stream.close(err)
        return self.conn.out[0]

    async def register(self, username: str, password: str) -> Element:
        return await self.send(iq("set", f"<username>{username}</username><password>{password}</password>"))


async def guest(server: Server, **kwargs: Any) -> Guest:
    g = Guest(server, **kwargs)
    await g.open()
    return g


async def can_login(server: Server, username: str, password: str) -> bool:
    """A SASL PLAIN login on a fresh stream (PLAIN is offered: the memory stream counts as TLS)."""
    g = await guest(server)
    token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
    reply = await g.send(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{token}</auth>")
    return reply.tag == f"{{{ns.SASL}}}success"


async def request(client: Client, iq: str) -> Element:
    await client.send(iq)
    (reply,) = await client.expect()
    return reply


# Before login ---------------------------------------------------------------------------------


async def test_stream_feature_before_login_only(server: Server) -> None:
    features = await Guest(server).open()
    assert features.find(FEATURE) is not None
    g = Guest(server)
    g.stream.username = "alice"
    assert (await g.open()).find(FEATURE) is None


async def test_no_stream_feature_without_tls_or_when_closed(tmp_path: Path, server: Server) -> None:
    assert (await Guest(server, secure=False).open()).find(FEATURE) is None
    modules = {"enable": ["register"], "register": {"allow_registration": False}}
    async with running(tmp_path / "closed", modules=modules) as closed:
        assert (await Guest(closed).open()).find(FEATURE) is None


async def test_registration_form(server: Server) -> None:
    g = await guest(server)
    reply = await g.send(iq("get", id="g1"))
    assert reply.get("type") == "result" and reply.get("id") == "g1"
    query_el = reply.find(QUERY)
    assert query_el is not None
    query = RegisterQuery.from_xml(query_el)
    assert query.username == "" and query.password == ""
    assert query.instructions and "8 characters" in query.instructions
    assert not query.registered
    assert query.form is not None
    assert query.form.form_type == ns.REGISTER
    assert [f.var for f in query.form.fields if f.required] == ["username", "password"]


async def test_register_then_login(server: Server) -> None:
    g = await guest(server)
    reply = await g.register("Carol", "correct horse")
    assert reply.get("type") == "result" and reply.get("id") == "r1"
    # The username is normalized (RFC 7622 §3.3: case-mapped localpart).
    assert await server.storage.accounts.get("localhost", "carol") is not None
    assert not g.stream.closed and not g.stream.authenticated
    assert await can_login(server, "carol", "correct horse")
    assert not await can_login(server, "carol", "wrong horse")


async def test_register_with_the_data_form(server: Server) -> None:
    g = await guest(server)
    form = (
        "<x xmlns='jabber:x:data' type='submit'>"
        f"<field var='FORM_TYPE' type='hidden'><value>{ns.REGISTER}</value></field>"
        "<field var='username'><value>dave</value></field>"
        "<field var='password'><value>s3cret-pass</value></field></x>"
    )
    reply = await g.send(iq("set", form))
    assert reply.get("type") == "result"
    assert await can_login(server, "dave", "s3cret-pass")


async def test_wrong_form_is_a_bad_request(server: Server) -> None:
    g = await guest(server)
    form = (
        "<x xmlns='jabber:x:data' type='submit'>"
        "<field var='FORM_TYPE' type='hidden'><value>urn:other</value></field>"
        "<field var='username'><value>dave</value></field></x>"
    )
    reply = await g.send(iq("set", form))
    assert condition(reply) == "bad-request"
    broken = "<x xmlns='jabber:x:data' type='nonsense'/>"
    reply = await g.send(iq("set", broken))
    assert condition(reply) == "bad-request"


async def test_taken_username(server: Server) -> None:
    await add_user(server, "alice")
    g = await guest(server)
    reply = await g.register("ALICE", "long enough")
    assert condition(reply) == "conflict"
    # §3.3: the password is not echoed back.
    assert reply.find(QUERY) is None
    assert "long enough" not in serialize(reply)


@pytest.mark.parametrize("username", ["+4915123456789", "+4915123456789@localhost", "+15551234567"])
async def test_a_phone_number_is_not_registered_in_band(server: Server, username: str) -> None:
    """Numbers are proven by SMS (docs/phone.md), with the phone module on or off: a number
    taken in-band would be someone else's, and its owner could not sign up."""
    g = await guest(server)
    reply = await g.register(username, "long enough")
    assert condition(reply) == "not-acceptable"
    text = reply.find(f"{{{ns.CLIENT}}}error/{{{ns.STANZA_ERRORS}}}text")
    assert text is not None and text.text == "phone numbers are registered by SMS verification"
    assert await server.storage.accounts.list("localhost") == []


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("erin", "short"),
        ("erin", "x" * 1025),
        ("erin", ""),
        ("", "long enough"),
        ("bad user", "long enough"),
        ("a@b@c", "long enough"),
        ("x/y", "long enough"),
        ("erin@elsewhere.example", "long enough"),
    ],
)
async def test_unacceptable_registrations(server: Server, username: str, password: str) -> None:
    g = await guest(server)
    assert condition(await g.register(username, password)) == "not-acceptable"
    assert await server.storage.accounts.get("localhost", "erin") is None


async def test_missing_password_element(server: Server) -> None:
    g = await guest(server)
    reply = await g.send(iq("set", "<username>erin</username>"))
    assert condition(reply) == "not-acceptable"


async def test_minimum_length_is_configurable(tmp_path: Path) -> None:
    modules = {"enable": ["register"], "register": {"min_password_length": 12}}
    async with running(tmp_path, modules=modules) as srv:
        g = await guest(srv)
        assert condition(await g.register("erin", "elevenchars")) == "not-acceptable"
        assert (await g.register("erin", "twelve chars")).get("type") == "result"


async def test_remove_before_login(server: Server) -> None:
    g = await guest(server)
    reply = await g.send(iq("set", "<remove/>"))
    assert condition(reply) == "unexpected-request"


async def test_iq_without_id(server: Server) -> None:
    g = await guest(server)
    reply = await g.send(iq("get", id=None))
    assert condition(reply) == "bad-request"


async def test_registration_disabled(tmp_path: Path) -> None:
    modules = {"enable": ["register"], "register": {"allow_registration": False}}
    async with running(tmp_path, modules=modules) as srv:
        g = await guest(srv)
        reply = await g.send(iq("get", id="g1"))
        assert condition(reply) == "service-unavailable"
        assert condition(await g.register("erin", "long enough")) == "service-unavailable"


async def test_registration_needs_tls(tmp_path: Path) -> None:
    async with running(tmp_path, modules={"enable": ["register"]}, tls={"require_c2s": False}) as srv:
        g = await guest(srv, secure=False)
        assert condition(await g.register("erin", "long enough")) == "not-authorized"
        assert await srv.storage.accounts.get("localhost", "erin") is None


async def test_other_iqs_before_login_close_the_stream(server: Server) -> None:
    g = await guest(server)
    reply = await g.send(f"<iq type='get' id='g1' xmlns='{ns.CLIENT}'><query xmlns='{ns.ROSTER}'/></iq>")
    assert stream_error(reply) == "not-authorized"
    g = await guest(server)
    reply = await g.send(iq("get", to="elsewhere.example"))
    assert stream_error(reply) == "not-authorized"


async def test_addressed_to_the_domain(server: Server) -> None:
    g = await guest(server)
    reply = await g.send(iq("get", to="localhost"))
    assert reply.get("type") == "result"


async def test_registrations_per_address_are_limited(server: Server) -> None:
    for i in range(5):
        g = await guest(server)
        assert (await g.register(f"user{i}", "long enough")).get("type") == "result"
    g = await guest(server)
    reply = await g.register("user5", "long enough")
    assert condition(reply) == "resource-constraint"
    assert await server.storage.accounts.get("localhost", "user5") is None
    # Another address is not affected.
    g = await guest(server, peer="192.0.2.7:5000")
    assert (await g.register("user5", "long enough")).get("type") == "result"


async def test_failed_registrations_do_not_count(tmp_path: Path) -> None:
    modules = {"enable": ["register"], "register": {"max_per_ip_per_hour": 1}}
    async with running(tmp_path, modules=modules) as srv:
        await add_user(srv, "taken")
        g = await guest(srv)
        assert condition(await g.register("taken", "long enough")) == "conflict"
        assert (await g.register("fresh", "long enough")).get("type") == "result"
        assert condition(await g.register("fresher", "long enough")) == "resource-constraint"


async def test_concurrent_registrations_share_the_limit(tmp_path: Path) -> None:
    """Registrations from one address that overlap must not all pass the check before any counts."""
    modules = {"enable": ["register"], "register": {"max_per_ip_per_hour": 2}}
    async with running(tmp_path, modules=modules) as srv:
        guests = [await guest(srv) for _ in range(5)]
        replies = await asyncio.gather(*(g.register(f"user{i}", "long enough") for i, g in enumerate(guests)))
        assert sorted(r.get("type") or "" for r in replies) == ["error"] * 3 + ["result"] * 2
        assert {condition(r) for r in replies if r.get("type") == "error"} == {"resource-constraint"}
        assert len(await srv.storage.accounts.list("localhost")) == 2


# After login ----------------------------------------------------------------------------------


async def alice(server: Server, resource: str = "phone") -> Client:
    if await server.storage.accounts.get("localhost", "alice") is None:
        await add_user(server, "alice", "old password")
    return await connect(server, f"alice@localhost/{resource}")


async def test_registered_info(server: Server) -> None:
    client = await alice(server)
    reply = await request(client, iq("get"))
    query_el = reply.find(QUERY)
    assert reply.get("type") == "result" and query_el is not None
    query = RegisterQuery.from_xml(query_el)
    assert query.registered and query.username == "alice"


async def test_change_password(server: Server) -> None:
    client = await alice(server)
    reply = await request(
        client, iq("set", "<username>alice</username><password>new password</password>", to="localhost")
    )
    assert reply.get("type") == "result"
    assert await can_login(server, "alice", "new password")
    assert not await can_login(server, "alice", "old password")


async def test_change_password_with_form(server: Server) -> None:
    client = await alice(server)
    form = (
        "<x xmlns='jabber:x:data' type='submit'>"
        "<field var='FORM_TYPE' type='hidden'><value>jabber:iq:register:changepassword</value></field>"
        "<field var='username'><value>alice@localhost</value></field>"
        "<field var='old_password'><value>old password</value></field>"
        "<field var='password'><value>form password</value></field></x>"
    )
    reply = await request(client, iq("set", form))
    assert reply.get("type") == "result"
    assert await can_login(server, "alice", "form password")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("<password>new password</password>", "bad-request"),
        ("<username>bob</username><password>new password</password>", "forbidden"),
        ("<username>alice</username><password/>", "not-acceptable"),
        ("<username>alice</username><password>short</password>", "not-acceptable"),
        ("<username>not valid</username><password>new password</password>", "not-acceptable"),
        ("<remove/><username>alice</username>", "bad-request"),
        ("<x xmlns='jabber:x:data' type='form'/>", "bad-request"),
        ("<x xmlns='jabber:x:data' type='bogus'/>", "bad-request"),
    ],
)
async def test_bad_account_changes(server: Server, query: str, expected: str) -> None:
    await add_user(server, "bob")
    client = await alice(server)
    reply = await request(client, iq("set", query))
    assert condition(reply) == expected
    assert reply.find(QUERY) is None
    assert await can_login(server, "alice", "old password")
    assert await server.storage.accounts.get("localhost", "alice") is not None


async def test_change_password_needs_an_encrypted_session(server: Server) -> None:
    client = await alice(server)
    assert client.stream.session is not None
    client.stream.session.secure = False
    reply = await request(client, iq("set", "<username>alice</username><password>new password</password>"))
    assert condition(reply) == "not-authorized"
    assert await can_login(server, "alice", "old password")


async def test_other_domain_is_not_allowed(tmp_path: Path) -> None:
    domains = ["localhost", "other.example"]
    async with running(tmp_path, domains=domains, modules={"enable": ["register"]}) as srv:
        client = await alice(srv)
        for kind, payload in (("get", ""), ("set", "<remove/>")):
            reply = await request(client, iq(kind, payload, to="other.example"))
            assert condition(reply) == "not-allowed"
        assert await srv.storage.accounts.get("localhost", "alice") is not None


async def test_only_sessions_manage_accounts(server: Server) -> None:
    await add_user(server, "alice")
    el = parse_frame(
        f"<iq type='set' id='s1' from='localhost' to='localhost' xmlns='{ns.CLIENT}'>"
        f"<query xmlns='{ns.REGISTER}'><remove/></query></iq>".encode(),
        10**6,
    )
    module = server.modules["register"]
    assert isinstance(module, Register)
    reply = await module.account_change(Stanza.parse(el), None)
    assert isinstance(reply, Element)
    assert condition(reply) == "forbidden"
    assert await server.storage.accounts.get("localhost", "alice") is not None


async def test_remove_account(server: Server) -> None:
    deleted: list[tuple[str, str]] = []

    async def on_deleted(host: str, username: str) -> None:
        deleted.append((host, username))

    server.hooks.add("user-deleted", on_deleted)
    phone = await alice(server)
    desk = await alice(server, "desk")
    await request(phone, f"<iq type='set' id='v1'><vCard xmlns='{ns.VCARD}'><FN>Alice</FN></vCard></iq>")
    await phone.send(iq("set", "<remove/>", id="u1"))
    result, error, close = phone.take()
    # §3.2: the result first, then the stream error that ends every session.
    assert result.get("type") == "result" and result.get("id") == "u1"
    assert stream_error(error) == "not-authorized"
    assert close.tag == CLOSE and phone.conn.closed
    desk_error, desk_close = desk.take()
    assert stream_error(desk_error) == "not-authorized"
    assert desk_close.tag == CLOSE and desk.conn.closed
    assert deleted == [("localhost", "alice")]
    assert await server.storage.accounts.get("localhost", "alice") is None
    assert await server.storage.kv.get("localhost", "alice", "vcard") is None
    assert not await can_login(server, "alice", "old password")


async def test_remove_account_that_fails_says_so_and_keeps_it(server: Server) -> None:
    async def failing(host: str, username: str) -> None:
        raise RuntimeError("the roster could not be read")

    server.hooks.add("user-deleting", failing)
    phone = await alice(server)
    desk = await alice(server, "desk")
    await phone.send(iq("set", "<remove/>", id="u1"))
    (answer,) = phone.take()
    assert condition(answer) == "internal-server-error" and answer.get("id") == "u1"
    assert not phone.conn.closed and desk.take() == [] and not desk.conn.closed
    assert await server.storage.accounts.get("localhost", "alice") is not None


async def test_remove_account_whose_data_a_module_failed_to_drop_still_ends_it(server: Server) -> None:
    async def failing(host: str, username: str) -> None:
        raise RuntimeError("the upload directory could not be read")

    server.hooks.add("user-deleted", failing)
    phone = await alice(server)
    await phone.send(iq("set", "<remove/>", id="u1"))
    result, error, _close = phone.take()
    assert result.get("type") == "result" and stream_error(error) == "not-authorized"
    assert await server.storage.accounts.get("localhost", "alice") is None


async def test_register_feature_in_domain_disco(server: Server) -> None:
    client = await alice(server)
    await client.send(f"<iq type='get' id='d1' to='localhost'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    (reply,) = await client.expect()
    query = reply.find(f"{{{ns.DISCO_INFO}}}query")
    assert query is not None
    assert ns.REGISTER in [f.get("var") for f in query.findall(f"{{{ns.DISCO_INFO}}}feature")]

