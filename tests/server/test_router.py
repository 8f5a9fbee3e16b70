"""The router: route keys, handler order, replies, and errors (RFC 6120 §8.3, §10; RFC 6121 §8)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.config import DEFAULT_MODULES, ConfigError
from schnack.server.hooks import HANDLED, Handled
from schnack.server.module import Module, NoOptions
from schnack.server.router import ANY_PAYLOAD
from schnack.server.sessions import Session
from schnack.server.storage import AccountGone, StorageError
from schnack.xmpp import ns
from schnack.xmpp.errors import StanzaError
from schnack.xmpp.jid import JID
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.stanza import Stanza

from ..harness import Client, connect, running, turns, xml
from .modules.messaging import condition, error_text

PROBE = "{urn:example:probe}query"
KINDS = ("message", "presence", "iq")
TARGETS = ("self", "host", "bare", "full", "remote")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """The router alone: no module handles anything unless a test registers it."""
    async with running(tmp_path, modules={"disable": list(DEFAULT_MODULES)}) as srv:
        yield srv


@pytest.fixture
async def alice(server: Server) -> Client:
    return await connect(server, "alice@localhost/desk")


def trace(server: Server) -> list[str]:
    """Record every route key fired, in order; the recorders let every stanza pass."""
    seen: list[str] = []

    def recorder(key: str) -> Any:
        async def record(_stanza: Stanza, _origin: Session | None) -> None:
            seen.append(key)

        return record

    for target in TARGETS:
        for kind in KINDS:
            for key in (f"{kind}/{target}", f"pre-{kind}/{target}"):
                server.hooks.add(key, recorder(key), priority=1000)
        for key in (f"iq/{target}/{ANY_PAYLOAD}", f"iq/{target}/{PROBE}"):
            server.hooks.add(key, recorder(key), priority=1000)
    return seen


def element(text: str) -> Element:
    return parse_frame(text.encode(), 10**6)


@pytest.mark.parametrize(
    ("to", "target"),
    [
        (None, "self"),
        ("alice@localhost", "self"),
        ("ALICE@LocalHost", "self"),
        ("alice@localhost/desk", "full"),
        ("alice@localhost/phone", "full"),
        ("bob@localhost", "bare"),
        ("bob@localhost/laptop", "full"),
        ("localhost", "host"),
        # A resource of the domain itself is the server's to handle (RFC 6120 §10.5.2).
        ("localhost/some-resource", "host"),
        ("remote.example", "remote"),
        ("bob@remote.example", "remote"),
        ("bob@remote.example/laptop", "remote"),
    ],
)
@pytest.mark.parametrize("kind", ["message", "presence"])
async def test_route_keys_of_client_stanzas(
    server: Server, alice: Client, kind: str, to: str | None, target: str
) -> None:
    seen = trace(server)
    attrs = f" to='{to}'" if to else ""
    await alice.send(f"<{kind}{attrs} type='{'chat' if kind == 'message' else 'probe'}'/>")
    assert seen == [f"pre-{kind}/{target}", f"{kind}/{target}"]


@pytest.mark.parametrize(
    ("to", "target"),
    [(None, "self"), ("alice@localhost", "self"), ("bob@localhost", "bare"), ("bob@localhost/x", "full"),
     ("localhost", "host"), ("remote.example", "remote")],
)
async def test_route_keys_of_iq_requests_try_the_payload_first(
    server: Server, alice: Client, to: str | None, target: str
) -> None:
    seen = trace(server)
    attrs = f" to='{to}'" if to else ""
    await alice.send(f"<iq type='get' id='q1'{attrs}><query xmlns='urn:example:probe'/></iq>")
    assert seen == [f"pre-iq/{target}", f"iq/{target}/*", f"iq/{target}/{PROBE}", f"iq/{target}"]


@pytest.mark.parametrize("kind", ["result", "error"])
async def test_iq_responses_use_the_plain_key(server: Server, alice: Client, kind: str) -> None:
    seen = trace(server)
    payload = "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>" if kind == "error" else ""
    await alice.send(f"<iq type='{kind}' id='r1' to='bob@localhost/x'>{payload}</iq>")
    assert seen == ["pre-iq/full", "iq/full"]
    assert alice.take() == []


async def test_any_payload_key_runs_before_the_payload_handlers_whoever_sent_the_iq(
    server: Server, alice: Client
) -> None:
    """``iq/{target}/*`` sees every IQ get/set first, from a client or from elsewhere (origin None)."""

    async def refuse(_stanza: Stanza, _origin: Session | None) -> None:
        raise StanzaError("service-unavailable")

    async def answer(stanza: Stanza, _origin: Session | None) -> Element:
        return stanza.result()

    server.hooks.add(f"iq/bare/{ANY_PAYLOAD}", refuse)
    server.hooks.add(f"iq/bare/{PROBE}", answer, priority=1000)
    await alice.send("<iq type='get' id='q1' to='bob@localhost'><query xmlns='urn:example:probe'/></iq>")
    (refused,) = alice.take()
    assert condition(refused) == "service-unavailable"
    errors: list[Stanza] = []

    async def caught(stanza: Stanza, _origin: Session | None) -> Handled:
        errors.append(stanza)
        return HANDLED

    server.hooks.add("iq/remote", caught)
    await server.router.route(Stanza.parse(element(
        f"<iq xmlns='{ns.CLIENT}' type='get' id='q2' from='eve@remote.example/x' to='bob@localhost'>"
        "<query xmlns='urn:example:probe'/></iq>"
    )))
    assert [(e.type, str(e.to)) for e in errors] == [("error", "eve@remote.example/x")]


async def test_server_stanzas_skip_the_pre_phase(server: Server) -> None:
    seen = trace(server)
    await server.router.send(element(f"<message xmlns='{ns.CLIENT}' from='localhost' to='bob@localhost'/>"))
    await server.router.send(element(f"<message xmlns='{ns.CLIENT}' from='localhost'/>"))
    await server.router.send(
        element(f"<iq xmlns='{ns.CLIENT}' type='get' id='s1' from='localhost' to='bob@localhost/x'>"
                "<query xmlns='urn:example:probe'/></iq>")
    )
    # Nobody answered the IQ: its service-unavailable error comes back to the server, and ends there.
    assert seen == ["message/bare", "message/host", "iq/full/*", f"iq/full/{PROBE}", "iq/full", "iq/host"]


def test_target_without_an_origin(server: Server) -> None:
    """Without a sending session nothing is 'self': a stanza without 'to' is for the server."""
    router = server.router
    assert router.target(None, None) == "host"
    assert router.target(JID.parse("alice@localhost"), None) == "bare"
    assert router.target(JID.parse("localhost"), None) == "host"
    assert router.target(JID.parse("a@elsewhere"), None) == "remote"


async def test_priorities_and_handled(server: Server, alice: Client) -> None:
    calls: list[str] = []

    def handler(name: str, result: Element | Handled | None) -> Any:
        async def handle(_stanza: Stanza, _origin: Session | None) -> Element | Handled | None:
            calls.append(name)
            return result

        return handle

    server.hooks.add("message/bare", handler("default-pass", None))
    server.hooks.add("message/bare", handler("late", HANDLED), priority=-10)
    server.hooks.add("message/bare", handler("never", HANDLED), priority=-20)
    server.hooks.add("message/bare", handler("early-pass", None), priority=10)
    await alice.send("<message to='bob@localhost'><body>hi</body></message>")
    assert calls == ["early-pass", "default-pass", "late"]
    assert alice.take() == []


async def test_a_pre_handler_can_stop_a_stanza(server: Server, alice: Client) -> None:
    delivered: list[Stanza] = []

    async def deliver(stanza: Stanza, _origin: Session | None) -> Handled:
        delivered.append(stanza)
        return HANDLED

    async def policy(stanza: Stanza, _origin: Session | None) -> None:
        if stanza.el.find(f"{{{ns.CLIENT}}}body") is not None:
            raise StanzaError("policy-violation", "no plaintext here")

    server.hooks.add("message/bare", deliver)
    server.hooks.add("pre-message/bare", policy)
    await alice.send("<message to='bob@localhost' id='p1'><body>plain</body></message>")
    (reply,) = alice.take()
    assert condition(reply) == "policy-violation"
    assert error_text(reply) == "no plaintext here"
    assert delivered == []
    await alice.send("<message to='bob@localhost' id='p2'><encrypted xmlns='urn:example:e2e'/></message>")
    assert [s.id for s in delivered] == ["p2"]


async def test_the_sender_is_stamped_before_handlers_run(server: Server, alice: Client) -> None:
    seen: list[str | None] = []

    async def record(stanza: Stanza, _origin: Session | None) -> Handled:
        seen.append(stanza.el.get("from"))
        assert stanza.from_ == JID.parse("alice@localhost/desk")
        return HANDLED

    server.hooks.add("message/bare", record)
    await alice.send("<message to='bob@localhost'/>")
    await alice.send("<message to='bob@localhost' from='alice@localhost'/>")
    assert seen == ["alice@localhost/desk", "alice@localhost/desk"]


async def test_unhandled_iq_request_gets_service_unavailable(server: Server, alice: Client) -> None:
    await alice.send("<iq type='set' id='u1' to='localhost'><query xmlns='urn:example:probe'/></iq>")
    (reply,) = alice.take()
    assert condition(reply) == "service-unavailable"
    assert reply.get("id") == "u1"
    assert reply.get("to") == "alice@localhost/desk"
    assert reply.get("from") == "localhost"
    # RFC 6120 §8.3.1: an IQ error may carry the request's payload.
    assert reply.find(PROBE) is not None


async def test_unhandled_message_to_a_local_account_is_dropped_silently(server: Server, alice: Client) -> None:
    """Which messages bounce is the message module's decision; the router alone says nothing."""
    await alice.send("<message to='bob@localhost' type='chat'><body>x</body></message>")
    await alice.send("<presence to='bob@localhost' type='subscribe'/>")
    assert alice.take() == []


@pytest.mark.parametrize(
    "stanza",
    [
        "<message to='bob@remote.example' id='r1' type='chat'><body>x</body></message>",
        "<presence to='bob@remote.example' id='r1' type='subscribe'/>",
        "<iq to='remote.example' id='r1' type='get'><ping xmlns='urn:xmpp:ping'/></iq>",
    ],
)
async def test_remote_domains_are_not_reachable(server: Server, alice: Client, stanza: str) -> None:
    await alice.send(stanza)
    (reply,) = alice.take()
    assert condition(reply) == "remote-server-not-found"
    assert reply.get("id") == "r1"


async def test_a_handler_reply_goes_back_to_the_sender(server: Server, alice: Client) -> None:
    async def answer(stanza: Stanza, _origin: Session | None) -> Element:
        return stanza.result(Element(PROBE, {"answer": "42"}))

    server.hooks.add(f"iq/host/{PROBE}", answer)
    await alice.send("<iq type='get' id='a1' to='localhost'><query xmlns='urn:example:probe'/></iq>")
    (reply,) = alice.take()
    assert reply.get("type") == "result" and reply.get("id") == "a1"
    answer_el = reply.find(PROBE)
    assert answer_el is not None and answer_el.get("answer") == "42"


async def test_a_reply_for_someone_else_is_routed(server: Server, alice: Client) -> None:
    routed: list[str] = []

    async def forward(stanza: Stanza, _origin: Session | None) -> Element:
        return Element(f"{{{ns.CLIENT}}}message", {"from": "localhost", "to": "carol@localhost", "id": stanza.id or ""})

    async def to_carol(stanza: Stanza, _origin: Session | None) -> Handled:
        routed.append(f"{stanza.to} {stanza.id}")
        return HANDLED

    server.hooks.add("message/host", forward)
    server.hooks.add("message/bare", to_carol)
    await alice.send("<message to='localhost' id='f1'/>")
    assert routed == ["carol@localhost f1"]
    assert alice.take() == []


async def test_a_reply_to_a_sender_that_left_is_routed_to_its_address(server: Server, alice: Client) -> None:
    arrived: list[str | None] = []

    async def answer_after_leaving(stanza: Stanza, origin: Session | None) -> Element:
        assert origin is not None
        await alice.close()
        return stanza.result()

    async def at_full(stanza: Stanza, _origin: Session | None) -> Handled:
        arrived.append(stanza.type)
        return HANDLED

    server.hooks.add(f"iq/host/{PROBE}", answer_after_leaving)
    server.hooks.add("iq/full", at_full)
    await alice.send("<iq type='get' id='l1' to='localhost'><query xmlns='urn:example:probe'/></iq>")
    assert arrived == ["result"]
    assert alice.take() == []


# Failing handlers ------------------------------------------------------------------------------


async def test_a_raising_handler_gives_internal_server_error_and_the_server_goes_on(
    server: Server, alice: Client, caplog: pytest.LogCaptureFixture
) -> None:
    delivered: list[str | None] = []

    async def broken(_stanza: Stanza, _origin: Session | None) -> None:
        raise RuntimeError("secret detail")

    async def deliver(stanza: Stanza, _origin: Session | None) -> Handled:
        delivered.append(stanza.id)
        return HANDLED

    server.hooks.add("message/bare", broken)
    server.hooks.add("message/full", deliver)
    with caplog.at_level(logging.ERROR, logger="schnack.server.router"):
        await alice.send("<message to='bob@localhost' id='b1' type='chat'><body>x</body></message>")
    (reply,) = alice.take()
    assert condition(reply) == "internal-server-error"
    assert reply.get("id") == "b1"
    assert reply.get("to") == "alice@localhost/desk" and reply.get("from") == "bob@localhost"
    # The client learns nothing of the failure's details; the log has the traceback.
    assert "secret detail" not in xml(reply)
    assert reply.find(f"{{{ns.CLIENT}}}body") is None
    assert any(r.exc_info and "secret detail" in str(r.exc_info[1]) for r in caplog.records)
    # The stream and the server keep going.
    assert not alice.stream.closed
    await alice.send("<message to='bob@localhost/x' id='b2'/>")
    await alice.send("<message to='bob@localhost' id='b3'/>")
    assert delivered == ["b2"]
    assert [condition(r) for r in alice.take()] == ["internal-server-error"]


# Deferred writes ---------------------------------------------------------------------------------


def deferring(server: Server, write: asyncio.Future[None], delivered: list[str | None]) -> None:
    """A pre-route handler that defers ``write``, and delivery that records what arrived."""

    async def defer(stanza: Stanza, _origin: Session | None) -> None:
        server.router.defer(stanza, write)

    async def deliver(stanza: Stanza, _origin: Session | None) -> Handled:
        delivered.append(stanza.id)
        return HANDLED

    server.hooks.add("pre-message/bare", defer)
    server.hooks.add("message/bare", deliver)


async def test_a_deferred_write_holds_the_stanza_but_not_its_delivery(server: Server, alice: Client) -> None:
    write: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    delivered: list[str | None] = []
    deferring(server, write, delivered)
    sending = asyncio.create_task(alice.send("<message to='bob@localhost' id='m1' type='chat'><body>x</body></message>"))
    await turns()
    # Routing went on and delivered it; the stanza is not done (not counted as handled) until the write is.
    assert delivered == ["m1"]
    assert not sending.done() and alice.stream.stanzas_handled == 0
    write.set_result(None)
    await sending
    assert alice.stream.stanzas_handled == 1
    assert alice.take() == []


async def test_a_failed_deferred_write_is_a_wait_error_for_the_sender(server: Server, alice: Client) -> None:
    write: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    write.set_exception(StorageError("disk full"))
    delivered: list[str | None] = []
    deferring(server, write, delivered)
    await alice.send("<message to='bob@localhost' id='m1' type='chat'><body>x</body></message>")
    # Delivery had happened; the sender learns that the message may not be stored, and may send it again.
    assert delivered == ["m1"]
    (reply,) = alice.take()
    assert condition(reply) == "internal-server-error"
    assert reply.find(f"{{{ns.CLIENT}}}error").get("type") == "wait"  # type: ignore[union-attr]
    assert "disk full" not in xml(reply)
    assert not alice.stream.closed


async def test_a_write_for_an_account_deleted_meanwhile_is_service_unavailable(server: Server, alice: Client) -> None:
    write: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    write.set_exception(AccountGone("the account bob@localhost is deleted"))
    deferring(server, write, [])
    await alice.send("<message to='bob@localhost' id='m1' type='chat'><body>x</body></message>")
    # RFC 6121 §8.5.2.1.1, as for a message to an account that does not exist; not a 'wait' to retry.
    (reply,) = alice.take()
    assert condition(reply) == "service-unavailable"
    assert reply.find(f"{{{ns.CLIENT}}}error").get("type") == "cancel"  # type: ignore[union-attr]


async def test_after_a_failed_deferred_write_the_others_are_still_taken(server: Server, alice: Client) -> None:
    loop = asyncio.get_running_loop()

    async def defer_two_failing_writes(stanza: Stanza, _origin: Session | None) -> None:
        for delay in (0.0, 0.01):
            write: asyncio.Future[None] = loop.create_future()
            server.router.defer(stanza, write)
            loop.call_later(delay, write.set_exception, StorageError("disk full"))

    server.hooks.add("pre-message/bare", defer_two_failing_writes)
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    await alice.send("<message to='bob@localhost' id='m1' type='chat'><body>x</body></message>")
    # One error for the stanza; the second write's failure is taken when it comes.
    assert [condition(reply) for reply in alice.take()] == ["internal-server-error"]
    await asyncio.sleep(0.05)
    gc.collect()
    await asyncio.sleep(0)
    assert reported == []


async def test_a_failed_dispatch_wins_over_its_deferred_write(server: Server, alice: Client) -> None:
    loop = asyncio.get_running_loop()

    async def defer_a_failing_write(stanza: Stanza, _origin: Session | None) -> None:
        write: asyncio.Future[None] = loop.create_future()
        server.router.defer(stanza, write)
        loop.call_later(0.01, write.set_exception, StorageError("disk full"))

    async def refuse(_stanza: Stanza, _origin: Session | None) -> None:
        raise StanzaError("not-acceptable", "refused after the write was deferred")

    server.hooks.add("pre-message/bare", defer_a_failing_write)
    server.hooks.add("message/bare", refuse)
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    await alice.send("<message to='bob@localhost' id='m1' type='chat'><body>x</body></message>")
    (reply,) = alice.take()
    assert condition(reply) == "not-acceptable"
    # The write ends later; its failure is taken, not left for asyncio to report as never retrieved.
    await asyncio.sleep(0.05)
    gc.collect()
    await asyncio.sleep(0)
    assert reported == []


@pytest.mark.parametrize(("failure", "taken_back"), [
    (StanzaError("service-unavailable", "the mailbox is full"), True),
    (ValueError("a handler broke"), False),
])
async def test_a_refused_stanza_takes_its_deferred_writes_back(
    server: Server, alice: Client, failure: Exception, taken_back: bool
) -> None:
    """A refusal tells the sender the stanza was not taken, so what was written for it goes; after
    a failure the stanza may have been delivered, and the write stays."""
    loop = asyncio.get_running_loop()
    written: asyncio.Future[None] = loop.create_future()
    undone: list[str] = []

    async def undo() -> None:
        assert written.done(), "taken back only once written"
        undone.append("m1")

    async def defer(stanza: Stanza, _origin: Session | None) -> None:
        server.router.defer(stanza, written, undo=undo)
        loop.call_later(0.01, written.set_result, None)

    async def fail(_stanza: Stanza, _origin: Session | None) -> None:
        raise failure

    server.hooks.add("pre-message/bare", defer)
    server.hooks.add("message/bare", fail)
    await alice.send("<message to='bob@localhost' id='m1' type='chat'><body>x</body></message>")
    alice.take()
    await server.router.withdrawn()
    await written
    assert undone == (["m1"] if taken_back else [])


async def test_an_accepted_stanza_keeps_its_deferred_writes(server: Server, alice: Client) -> None:
    loop = asyncio.get_running_loop()
    written: asyncio.Future[None] = loop.create_future()
    undone: list[str] = []

    async def undo() -> None:
        undone.append("m1")

    async def defer(stanza: Stanza, _origin: Session | None) -> None:
        server.router.defer(stanza, written, undo=undo)
        written.set_result(None)

    server.hooks.add("pre-message/bare", defer)
    await alice.send("<message to='bob@localhost' id='m1' type='chat'><body>x</body></message>")
    await server.router.withdrawn()
    assert undone == []


async def test_a_raising_handler_on_a_server_stanza_does_not_escape(server: Server) -> None:
    async def broken(_stanza: Stanza, _origin: Session | None) -> None:
        raise ValueError("boom")

    bounced: list[str] = []

    async def at_host(stanza: Stanza, _origin: Session | None) -> Handled:
        bounced.append(f"{stanza.type} {condition(stanza.el)}")
        return HANDLED

    server.hooks.add("message/bare", broken)
    server.hooks.add("message/host", at_host)
    await server.router.send(element(f"<message xmlns='{ns.CLIENT}' from='localhost' to='bob@localhost' id='s'/>"))
    assert bounced == ["error internal-server-error"]


async def test_a_malformed_server_stanza_is_dropped(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="schnack.server.router"):
        await server.router.send(element(f"<message xmlns='{ns.CLIENT}' from='localhost' to='a@b@c'/>"))
    assert "malformed address" in caplog.text


async def test_module_iq_api_dispatches_get_and_set(server: Server, alice: Client) -> None:
    class Probe(Module[NoOptions]):
        name = "probe"

        def setup(self) -> None:
            self.iq("host", PROBE, get=self.get)

        async def get(self, stanza: Stanza, _origin: Session | None) -> Element:
            return stanza.result()

    Probe(server, NoOptions()).setup()
    await alice.send("<iq type='get' id='g1' to='localhost'><query xmlns='urn:example:probe'/></iq>")
    await alice.send("<iq type='set' id='s1' to='localhost'><query xmlns='urn:example:probe'/></iq>")
    got, refused = alice.take()
    assert got.get("type") == "result" and got.get("id") == "g1"
    assert condition(refused) == "feature-not-implemented" and refused.get("id") == "s1"


# Services: domains a module serves (XEP-0030 items such as the group chat service) ------------

SERVICE = "groups.localhost"


class Service(Module[NoOptions]):
    name = "service"

    def setup(self) -> None:
        self.service(SERVICE)


@pytest.mark.parametrize("to", [SERVICE, f"room@{SERVICE}", f"room@{SERVICE}/nick", f"{SERVICE}/x"])
@pytest.mark.parametrize("kind", ["message", "presence"])
async def test_route_keys_of_stanzas_to_a_service(server: Server, alice: Client, kind: str, to: str) -> None:
    Service(server, NoOptions()).setup()
    seen = trace(server)
    for key in ("pre-message/service", "pre-presence/service", f"message/service/{SERVICE}",
                f"presence/service/{SERVICE}"):
        server.hooks.add(key, lambda _s, _o, key=key: _record(seen, key), priority=1000)
    await alice.send(f"<{kind} to='{to}'/>")
    assert seen == [f"pre-{kind}/service", f"{kind}/service/{SERVICE}"]
    assert server.router.target(JID.parse(to), None) == f"service/{SERVICE}"


async def _record(seen: list[str], key: str) -> None:
    seen.append(key)


async def test_iq_to_a_service_tries_its_payload_key_and_unhandled_gets_service_unavailable(
    server: Server, alice: Client
) -> None:
    class Echo(Service):
        def setup(self) -> None:
            super().setup()
            self.iq(f"service/{SERVICE}", PROBE, get=self.get)

        async def get(self, stanza: Stanza, _origin: Session | None) -> Element:
            return stanza.result()

    Echo(server, NoOptions()).setup()
    await alice.send(f"<iq type='get' id='g1' to='room@{SERVICE}'><query xmlns='urn:example:probe'/></iq>")
    await alice.send(f"<iq type='get' id='g2' to='room@{SERVICE}'><other xmlns='urn:example:probe'/></iq>")
    answered, refused = alice.take()
    assert answered.get("type") == "result" and answered.get("from") == f"room@{SERVICE}"
    assert condition(refused) == "service-unavailable" and refused.get("id") == "g2"


async def test_an_unclaimed_subdomain_stays_remote(server: Server) -> None:
    assert server.router.target(JID.parse(f"room@{SERVICE}"), None) == "remote"


@pytest.mark.parametrize("domain", ["localhost", SERVICE])
async def test_a_service_cannot_claim_a_host_or_another_services_domain(server: Server, domain: str) -> None:
    Service(server, NoOptions()).setup()

    class Other(Module[NoOptions]):
        name = "other"

        def setup(self) -> None:
            self.service(domain)

    with pytest.raises(ConfigError, match=r"^modules\.other: "):
        Other(server, NoOptions()).setup()


# RFC 6120 §8.3.1: an error stanza is never answered with another -----------------------------

ERROR = "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"


async def raise_stanza_error(_stanza: Stanza, _origin: Session | None) -> None:
    raise StanzaError("not-acceptable")


async def raise_bug(_stanza: Stanza, _origin: Session | None) -> None:
    raise KeyError("bug")


@pytest.mark.parametrize("handler", [raise_stanza_error, raise_bug, None], ids=["stanza-error", "bug", "unhandled"])
@pytest.mark.parametrize(
    ("key", "stanza"),
    [
        ("message/bare", f"<message to='bob@localhost' type='error' id='e1'>{ERROR}</message>"),
        ("presence/bare", f"<presence to='bob@localhost' type='error' id='e1'>{ERROR}</presence>"),
        ("iq/full", f"<iq to='bob@localhost/x' type='error' id='e1'>{ERROR}</iq>"),
        ("iq/host", f"<iq to='localhost' type='error' id='e1'>{ERROR}</iq>"),
        ("message/remote", f"<message to='bob@remote.example' type='error' id='e1'>{ERROR}</message>"),
        ("iq/remote", f"<iq to='remote.example' type='error' id='e1'>{ERROR}</iq>"),
    ],
)
async def test_errors_are_never_answered_with_errors(
    server: Server, alice: Client, key: str, stanza: str, handler: Any
) -> None:
    if handler is not None:
        server.hooks.add(key, handler)
    await alice.send(stanza)
    assert alice.take() == []
    assert not alice.stream.closed


@pytest.mark.parametrize("handler", [raise_stanza_error, raise_bug], ids=["stanza-error", "bug"])
@pytest.mark.parametrize(
    ("key", "stanza"),
    [
        ("iq/full", "<iq to='bob@localhost/x' type='result' id='r1'/>"),
        ("iq/remote", "<iq to='remote.example' type='result' id='r1'/>"),
        ("message/remote", f"<message to='bob@remote.example' type='error' id='r1'>{ERROR}</message>"),
        ("presence/remote", f"<presence to='bob@remote.example' type='error' id='r1'>{ERROR}</presence>"),
    ],
    ids=["iq-result", "remote-iq-result", "remote-message-error", "remote-presence-error"],
)
async def test_a_refused_response_is_dropped_and_logged(
    server: Server, alice: Client, caplog: pytest.LogCaptureFixture, key: str, stanza: str, handler: Any
) -> None:
    """RFC 6120 §8.2.3, §8.3.1: an IQ result or an error refused on its way (as s2s refuses with
    forbidden or resource-constraint) gets no answer; the log says it went nowhere."""
    server.hooks.add(key, handler)
    with caplog.at_level(logging.INFO, logger="schnack.server.router"):
        await alice.send(stanza)
    assert alice.take() == []
    assert any("dropped" in r.getMessage() and "r1" in r.getMessage() for r in caplog.records)


async def test_an_error_bounce_between_server_and_handler_ends(server: Server) -> None:
    """A handler that refuses everything, the server's own stanzas included, cannot start a loop."""
    seen: list[str | None] = []

    async def refuse(stanza: Stanza, _origin: Session | None) -> None:
        seen.append(stanza.type)
        raise StanzaError("forbidden")

    server.hooks.add("message/host", refuse)
    server.hooks.add("message/bare", refuse)
    await server.router.send(element(f"<message xmlns='{ns.CLIENT}' from='localhost' to='bob@localhost'/>"))
    assert seen == [None, "error"]
