"""XEP-0198 stream management: enabling, counting both ways, acks, resumption, and where unacked stanzas go."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import pytest

from schnack.server import app
from schnack.server.app import Server
from schnack.server.c2s import C2SStream
from schnack.xmpp import ns
from schnack.xmpp.payloads.sm import Ack, Enabled, Failed, HandledCountTooHigh, Resumed
from schnack.xmpp.xml import qname

from ...harness import DOMAIN, Client, MemoryConnection, add_user, running, turns, xml
from .contacts import kinds, presence
from .messaging import OMEMO, body, chat, condition, login, session_of
from .test_presence import befriend, online

SM = "urn:xmpp:sm:3"
MESSAGE = qname(ns.CLIENT, "message")
DELAY = qname(ns.DELAY, "delay")
STREAM_ERROR = qname(ns.STREAMS, "error")
ENABLE = f"<enable xmlns='{SM}' resume='true'/>"
R = f"<r xmlns='{SM}'/>"
# Acks are asked for only where a test says so: a timer firing mid-test would add an <r/> anywhere.
QUIET = {"ack_after_stanzas": 1000, "ack_after_seconds": 300}
GUARD = 30


def options(**sm: Any) -> dict[str, Any]:
    return {"e2e": {"policy": "optional"}, "sm": {**QUIET, **sm}}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(tmp_path, modules=options()) as srv:
        yield srv


def ack(h: int) -> str:
    return f"<a xmlns='{SM}' h='{h}'/>"


def resume(previd: str, h: int) -> str:
    return f"<resume xmlns='{SM}' previd='{previd}' h='{h}'/>"


def tag(el: Element) -> str:
    return el.tag.rpartition("}")[2]


def stream_error(out: list[Element]) -> str:
    """The condition of the stream error that ends ``out``, followed by the stream's close."""
    *_, error, close = out
    assert close.tag == qname(ns.FRAMING, "close"), xml(close)
    assert error.tag == STREAM_ERROR, xml(error)
    return next(tag(c) for c in error if c.tag != qname(ns.STREAM_ERRORS, "text"))


async def enabled(client: Client, request: str = ENABLE) -> Enabled:
    await client.send(request)
    (answer,) = client.take()
    return Enabled.from_xml(answer)


async def sm_login(server: Server, jid: str) -> tuple[Client, str]:
    """Log in and enable resumable stream management; return the client and the SM-ID."""
    client = await login(server, jid)
    answer = await enabled(client)
    assert answer.id is not None
    return client, answer.id


async def authenticated(server: Server, user: str) -> Client:
    """A new stream of ``user`` right after SASL: authenticated, not bound (XEP-0198 §5 resumes here)."""
    conn = MemoryConnection(peer="127.0.0.1:40001")
    stream = C2SStream(server, conn)
    stream.username = user
    await stream.on_open(qname(ns.FRAMING, "open"), {"to": DOMAIN, "version": "1.0"}, None)
    return Client(server, stream, conn)


async def chats(sender: Client, to: str, texts: list[str]) -> None:
    for text in texts:
        await sender.send(chat(to, text, id=text))


def stamps(el: Element) -> list[str]:
    """The XEP-0203 delay stamps of ``el``."""
    return [delay.get("stamp", "") for delay in el.iterfind(DELAY)]


def bodies(elements: list[Element]) -> list[str | None]:
    return [body(el) for el in elements if el.tag == MESSAGE]


async def stored(server: Server, user: str = "bob") -> int:
    return await server.storage.archive.count(DOMAIN, user, "offline")


def on_end(server: Server, client: Client) -> asyncio.Event:
    """Set once the session of ``client`` ended and every module (this one first) handled it."""
    session = session_of(client)
    done = asyncio.Event()

    async def closed(ended: Any) -> None:
        if ended is session:
            done.set()

    server.hooks.add("session-closed", closed, priority=-1000)
    return done


async def wait(event: asyncio.Event) -> None:
    async with asyncio.timeout(GUARD):
        await event.wait()


async def all_ended(*clients: tuple[Server, Client]) -> None:
    """Drop the connections of ``clients`` (each with its server) and wait until their sessions ended."""
    ends = [on_end(server, client) for server, client in clients]
    for _server, client in clients:
        await client.close()
    for end in ends:
        await wait(end)


async def comes_online(server: Server, jid: str) -> list[Element]:
    """Log in, send initial presence; return the messages that arrived (from offline storage)."""
    client = await login(server, jid)
    await client.send(presence())
    return [el for el in client.take() if el.tag == MESSAGE]


# Enabling --------------------------------------------------------------------------------------


async def test_feature_offered_once_authenticated(server: Server) -> None:
    conn = MemoryConnection()
    stream = C2SStream(server, conn)
    await stream.on_open(qname(ns.FRAMING, "open"), {"to": DOMAIN, "version": "1.0"}, None)
    features = conn.out[-1]
    assert features.find(qname(SM, "sm")) is None
    await add_user(server, "bob")
    after_auth = await authenticated(server, "bob")
    features = after_auth.take()[-1]
    assert features.find(qname(SM, "sm")) is not None
    assert features.find(qname(ns.BIND, "bind")) is not None


async def test_enable_answers_with_a_resumable_id(tmp_path: Path) -> None:
    async with running(tmp_path, modules=options(resume_timeout=600, location="203.0.113.5:5222")) as server:
        alice = await login(server, "alice@localhost/phone")
        answer = await enabled(alice)
        assert answer.resume and answer.id
        assert answer.max == 600
        assert answer.location == "203.0.113.5:5222"
        # The client may ask for less time, not for more.
        other = await login(server, "alice@localhost/tablet")
        assert (await enabled(other, f"<enable xmlns='{SM}' resume='true' max='60'/>")).max == 60
        third = await login(server, "alice@localhost/desk")
        assert (await enabled(third, f"<enable xmlns='{SM}' resume='true' max='7200'/>")).max == 600


async def test_enable_without_resume_has_no_id(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    assert await enabled(alice, f"<enable xmlns='{SM}'/>") == Enabled()


async def test_enable_before_binding_or_twice_fails(server: Server) -> None:
    await add_user(server, "alice")
    unbound = await authenticated(server, "alice")
    unbound.take()
    await unbound.send(ENABLE)
    assert [Failed.from_xml(el) for el in unbound.take()] == [Failed("unexpected-request")]
    alice, _ = await sm_login(server, "alice@localhost/phone")
    await alice.send(ENABLE)
    assert [Failed.from_xml(el) for el in alice.take()] == [Failed("unexpected-request")]


async def test_malformed_enable_fails_with_bad_request(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await alice.send(f"<enable xmlns='{SM}' resume='maybe'/>")
    assert [Failed.from_xml(el) for el in alice.take()] == [Failed("bad-request")]


async def test_acks_before_enabling_are_refused(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await alice.send(R)
    assert stream_error(alice.take()) == "unsupported-stanza-type"
    assert alice.stream.closed


# Counting and acks -----------------------------------------------------------------------------


async def test_server_counts_what_it_handled(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await alice.send(f"<iq type='get' id='before'><ping xmlns='{ns.PING}'/></iq>")
    alice.take()
    await enabled(alice)
    await alice.send(R)
    assert [Ack.from_xml(el) for el in alice.take()] == [Ack(0)]
    await alice.send(f"<iq type='get' id='p1'><ping xmlns='{ns.PING}'/></iq>")
    await alice.send("<iq type='get' id='p2'><nothing-here xmlns='urn:example'/></iq>")  # an error is handled too
    await alice.send(chat("nobody@localhost", "to no one"))
    await alice.send(R)
    out = alice.take()
    assert [tag(el) for el in out] == ["iq", "iq", "message", "a"]
    assert Ack.from_xml(out[-1]) == Ack(3)


async def test_acks_are_asked_for_after_enough_stanzas(tmp_path: Path) -> None:
    async with running(tmp_path, modules=options(ack_after_stanzas=3)) as server:
        alice = await login(server, "alice@localhost/phone")
        bob, _ = await sm_login(server, "bob@localhost/phone")
        await chats(alice, "bob@localhost/phone", ["1", "2", "3", "4"])
        assert [tag(el) for el in bob.take()] == ["message", "message", "message", "r", "message"]
        # One request at a time: the next comes once the client answered.
        await chats(alice, "bob@localhost/phone", ["5", "6"])
        assert [tag(el) for el in bob.take()] == ["message", "message"]
        await bob.send(ack(3))
        assert [tag(el) for el in bob.take()] == ["r"]


async def test_an_ack_is_asked_for_after_a_short_while(tmp_path: Path) -> None:
    async with running(tmp_path, modules=options(ack_after_seconds=0.05)) as server:
        alice = await login(server, "alice@localhost/phone")
        bob, _ = await sm_login(server, "bob@localhost/phone")
        await chats(alice, "bob@localhost/phone", ["only one"])
        (message,) = bob.take()
        assert body(message) == "only one"
        (request,) = await bob.expect(1, timeout=GUARD)
        assert request.tag == qname(SM, "r")


async def test_acknowledged_stanzas_are_not_stored_again(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    bob, _ = await sm_login(server, "bob@localhost/phone")
    await chats(alice, "bob@localhost/phone", ["a", "b", "c"])
    assert bodies(bob.take()) == ["a", "b", "c"]
    await bob.send(ack(2))
    await bob.send("<presence type='unavailable'/>")
    bob.stream.on_close()  # a clean close ends the session: no hibernation
    await bob.stream.connection_lost()
    assert await stored(server) == 1
    assert bodies(await comes_online(server, "bob@localhost/laptop")) == ["c"]


async def test_ack_above_what_was_sent_ends_the_stream(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    bob, _ = await sm_login(server, "bob@localhost/phone")
    await chats(alice, "bob@localhost/phone", ["a", "b"])
    bob.take()
    await bob.send(ack(5))
    out = bob.take()
    assert stream_error(out) == "undefined-condition"
    error = out[-2]
    too_high = error.find(qname(SM, "handled-count-too-high"))
    assert too_high is not None
    assert HandledCountTooHigh.from_xml(too_high) == HandledCountTooHigh(h=5, send_count=2)
    assert bob.stream.closed
    # Nothing the client did not acknowledge is lost.
    assert bodies(await comes_online(server, "bob@localhost/laptop")) == ["a", "b"]


async def test_malformed_ack_is_bad_format(server: Server) -> None:
    bob, _ = await sm_login(server, "bob@localhost/phone")
    await bob.send(f"<a xmlns='{SM}' h='many'/>")
    assert stream_error(bob.take()) == "bad-format"


async def test_too_many_unacknowledged_close_the_stream_and_nothing_is_lost(tmp_path: Path) -> None:
    async with running(tmp_path, modules=options(max_unacked=10)) as server:
        alice = await login(server, "alice@localhost/phone")
        bob, _ = await sm_login(server, "bob@localhost/phone")
        texts = [f"m{i}" for i in range(12)]
        await chats(alice, "bob@localhost/phone", texts)
        out = bob.take()
        assert stream_error(out) == "resource-constraint"
        assert bob.stream.closed
        await bob.stream.connection_lost()
        # The first ten were written before the limit was passed; all twelve wait, in order.
        assert bodies(out) == texts[:10]
        assert bodies(await comes_online(server, "bob@localhost/laptop")) == texts


# Resumption ------------------------------------------------------------------------------------


async def test_resume_sends_exactly_what_was_not_acknowledged(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    bob, previd = await sm_login(server, "bob@localhost/phone")
    await bob.send(f"<iq type='get' id='p1'><ping xmlns='{ns.PING}'/></iq>")
    await chats(alice, "bob@localhost/phone", ["1", "2", "3"])
    out = bob.take()
    assert [tag(el) for el in out] == ["iq", "message", "message", "message"]
    await bob.send(ack(2))  # the pong and "1"
    await bob.close()  # the connection dies
    assert not session_of(bob).closed
    # Messages keep coming while it hibernates; they wait in the queue.
    await chats(alice, "bob@localhost/phone", ["4", "5"])
    assert await stored(server) == 0
    again = await authenticated(server, "bob")
    again.take()
    await again.send(resume(previd, 3))  # "2" did arrive before the connection died
    out = again.take()
    assert Resumed.from_xml(out[0]) == Resumed(h=1, previd=previd)
    assert bodies(out[1:]) == ["3", "4", "5"]
    for el in out[1:]:
        delay = el.find(DELAY)
        assert delay is not None and delay.get("from") == DOMAIN, xml(el)
    # The same session goes on: the same JID, new stanzas live, and the counts carry on.
    assert again.stream.session is session_of(bob)
    assert again.jid == "bob@localhost/phone"
    await chats(alice, "bob@localhost/phone", ["6"])
    (live,) = again.take()
    assert body(live) == "6" and live.find(DELAY) is None
    await again.send(f"<iq type='get' id='p2'><ping xmlns='{ns.PING}'/></iq>")
    await again.send(R)
    assert [tag(el) for el in again.take()] == ["iq", "a"]
    await again.send(ack(7))
    await again.send(R)
    assert [Ack.from_xml(el) for el in again.take()] == [Ack(2)]


async def test_resume_of_an_unknown_session_fails_and_binding_still_works(server: Server) -> None:
    await add_user(server, "bob")
    stream = await authenticated(server, "bob")
    stream.take()
    await stream.send(resume("no-such-id", 0))
    assert [Failed.from_xml(el) for el in stream.take()] == [Failed("item-not-found")]
    await stream.send(f"<iq type='set' id='b'><bind xmlns='{ns.BIND}'><resource>new</resource></bind></iq>")
    (bound,) = stream.take()
    assert bound.get("type") == "result"
    assert stream.jid == "bob@localhost/new"


async def test_another_account_cannot_resume_a_session(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    bob, previd = await sm_login(server, "bob@localhost/phone")
    await bob.close()
    await chats(alice, "bob@localhost/phone", ["for bob only"])
    mallory = await authenticated(server, "alice")
    mallory.take()
    await mallory.send(resume(previd, 0))
    assert [Failed.from_xml(el) for el in mallory.take()] == [Failed("item-not-found")]
    assert mallory.stream.session is None
    bob_again = await authenticated(server, "bob")
    bob_again.take()
    await bob_again.send(resume(previd, 0))
    out = bob_again.take()
    assert tag(out[0]) == "resumed"
    assert bodies(out) == ["for bob only"]


async def test_resume_while_the_old_connection_is_open_closes_it(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    bob, previd = await sm_login(server, "bob@localhost/phone")
    await chats(alice, "bob@localhost/phone", ["seen", "maybe not"])
    bob.take()
    again = await authenticated(server, "bob")
    again.take()
    await again.send(resume(previd, 1))
    assert stream_error(bob.take()) == "conflict"
    assert bob.stream.closed and bob.conn.closed
    await bob.stream.connection_lost()  # the old connection's end changes nothing now
    out = again.take()
    assert tag(out[0]) == "resumed"
    assert bodies(out) == ["maybe not"]
    assert not session_of(again).closed
    await chats(alice, "bob@localhost/phone", ["after"])
    assert bodies(again.take()) == ["after"]


async def test_a_client_timed_out_for_silence_can_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog closes a silent client's stream (RFC 6120 §4.6), but the client never ended
    it: its network went away, which is what resumption is for (XEP-0198 §5)."""
    monkeypatch.setattr(app, "_WATCHDOG_PERIOD", 0.01)
    async with running(tmp_path, modules=options()) as server:
        alice = await login(server, "alice@localhost/phone")
        bob, previd = await sm_login(server, "bob@localhost/phone")
        await chats(alice, "bob@localhost/phone", ["sent before the silence"])
        bob.take()
        session = session_of(bob)
        # The watchdog watches the connection as it watches a socket: silent for far too long.
        watched: Any = bob.conn
        watched.stream = bob.stream
        watched.last_read = time.monotonic() - 10 * server.config.limits.idle_timeout
        watched.last_write = time.monotonic()
        server.connections.add(watched)
        assert stream_error(await bob.expect(2, timeout=GUARD)) == "connection-timeout"
        server.connections.discard(watched)
        await turns()
        await bob.stream.connection_lost()  # the socket closes after the linger
        assert not session.closed
        await chats(alice, "bob@localhost/phone", ["sent while it hibernates"])
        again = await authenticated(server, "bob")
        again.take()
        await again.send(resume(previd, 0))
        out = again.take()
        assert tag(out[0]) == "resumed"
        assert bodies(out) == ["sent before the silence", "sent while it hibernates"]


async def test_resume_counts_what_the_old_connection_still_routes(server: Server) -> None:
    """A message the old stream read is still being stored when the client resumes on a new
    connection: <resumed h/> counts it once stored, so the client does not send it again (§5)."""
    await add_user(server, "carol")  # offline: bob's message goes to offline storage
    bob, previd = await sm_login(server, "bob@localhost/phone")
    archive = server.storage.archive
    real_append = archive.append
    storing = asyncio.Event()

    async def slow_append(*args: Any, **kwargs: Any) -> Any:
        await storing.wait()
        return await real_append(*args, **kwargs)

    archive.append = slow_append  # type: ignore[method-assign]
    sending = asyncio.ensure_future(bob.send(chat("carol@localhost", "once", id="once")))
    await turns()
    assert not sending.done()
    again = await authenticated(server, "bob")
    again.take()
    asyncio.get_running_loop().call_later(0.05, storing.set)
    async with asyncio.timeout(GUARD):
        await again.send(resume(previd, 0))
        await sending
    archive.append = real_append  # type: ignore[method-assign]
    assert stream_error(bob.take()) == "conflict"
    out = again.take()
    assert Resumed.from_xml(out[0]) == Resumed(h=1, previd=previd)
    assert await stored(server, "carol") == 1
    await again.send(R)
    assert [Ack.from_xml(el) for el in again.take()] == [Ack(1)]


async def test_a_refused_resumption_leaves_the_old_connection_alone(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    bob, previd = await sm_login(server, "bob@localhost/phone")
    await chats(alice, "bob@localhost/phone", ["only"])
    bob.take()
    again = await authenticated(server, "bob")
    again.take()
    await again.send(resume(previd, 9))
    assert stream_error(again.take()) == "undefined-condition"
    assert not bob.stream.closed
    await chats(alice, "bob@localhost/phone", ["still here"])
    assert bodies(bob.take()) == ["still here"]


async def test_resume_with_an_impossible_count_is_refused(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    bob, previd = await sm_login(server, "bob@localhost/phone")
    await chats(alice, "bob@localhost/phone", ["only"])
    await bob.close()
    again = await authenticated(server, "bob")
    again.take()
    await again.send(resume(previd, 9))
    assert stream_error(again.take()) == "undefined-condition"
    # The session still waits for a proper resumption.
    third = await authenticated(server, "bob")
    third.take()
    await third.send(resume(previd, 0))
    assert bodies(third.take()) == ["only"]


# The end of a session --------------------------------------------------------------------------


async def test_hibernation_timeout_sends_everything_to_offline_storage(tmp_path: Path) -> None:
    async with running(tmp_path, modules=options(resume_timeout=1)) as server:
        alice = await online(server, "alice@localhost/phone")
        bob = await online(server, "bob@localhost/phone")
        await befriend(alice, bob)
        previd = (await enabled(bob)).id
        assert previd is not None
        await bob.send(f"<iq type='get' id='p1'><ping xmlns='{ns.PING}'/></iq>")
        bob.take()
        await chats(alice, "bob@localhost", ["one", "two"])
        assert bodies(bob.take()) == ["one", "two"]
        await bob.send(ack(2))  # the pong and "one"
        ended = on_end(server, bob)
        await bob.close()
        # Hibernating looks online: no unavailable presence, and new messages go to the queue.
        assert alice.take() == []
        await alice.send(chat("bob@localhost", "three", extra=OMEMO))
        assert await stored(server) == 0
        await wait(ended)
        assert kinds(alice.take()) == [("unavailable", "bob@localhost/phone", "alice@localhost")]
        assert await stored(server) == 2
        # Too late to resume; the client learns how far the server got.
        late = await authenticated(server, "bob")
        late.take()
        await late.send(resume(previd, 2))
        assert [Failed.from_xml(el) for el in late.take()] == [Failed("item-not-found", h=1)]
        got = await comes_online(server, "bob@localhost/phone")
        assert bodies(got) == ["two", "three"]
        assert all(el.find(DELAY) is not None for el in got)
        assert got[1].find(qname(ns.OMEMO_LEGACY, "encrypted")) is not None
        assert await stored(server) == 0


async def test_binding_the_resource_anew_ends_the_hibernating_session(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    bob, previd = await sm_login(server, "bob@localhost/phone")
    await chats(alice, "bob@localhost/phone", ["x", "y"])
    await bob.close()
    # The phone lost its SM-ID and logs in from scratch, with the same resource.
    assert bodies(await comes_online(server, "bob@localhost/phone")) == ["x", "y"]
    again = await authenticated(server, "bob")
    again.take()
    await again.send(resume(previd, 0))
    assert [Failed.from_xml(el) for el in again.take()] == [Failed("item-not-found", h=0)]


async def test_clean_close_without_acks_keeps_the_messages(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    bob, _ = await sm_login(server, "bob@localhost/phone")
    await chats(alice, "bob@localhost/phone", ["kept"])
    bob.stream.on_close()
    await bob.stream.connection_lost()
    assert await stored(server) == 1


async def test_only_messages_with_content_are_kept(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    bob, _ = await sm_login(server, "bob@localhost/phone")
    to = "bob@localhost/phone"
    await alice.send(chat(to, "headline", kind="headline", id="h"))
    await alice.send(f"<message to='{to}' type='chat' id='cs'><active xmlns='http://jabber.org/protocol/chatstates'/></message>")
    await alice.send(f"<message to='{to}' type='chat' id='enc'>{OMEMO}</message>")
    await alice.send(f"<message to='{to}' id='normal'><body>no type is normal</body></message>")
    await alice.send(f"<presence to='{to}'/>")
    assert len(bob.take()) == 5
    bob.stream.on_close()
    await bob.stream.connection_lost()
    got = await comes_online(server, "bob@localhost/laptop")
    assert [el.get("id") for el in got] == ["enc", "normal"]


async def test_a_message_its_sender_asked_to_store_is_kept(server: Server) -> None:
    """XEP-0334 §4: a message with a <store/> hint and no body, as call signalling is (XEP-0353
    §3: a caller's retract for a phone whose link dropped while it rang), goes to offline
    storage when the session ends."""
    alice = await login(server, "alice@localhost/phone")
    bob, _ = await sm_login(server, "bob@localhost/phone")
    retract = "<retract xmlns='urn:xmpp:jingle-message:0' id='call-1'/>"
    await alice.send(f"<message to='bob@localhost/phone' type='chat' id='jmi'>{retract}<store xmlns='urn:xmpp:hints'/></message>")
    assert len(bob.take()) == 1
    bob.stream.on_close()
    await bob.stream.connection_lost()
    got = await comes_online(server, "bob@localhost/laptop")
    assert [el.get("id") for el in got] == ["jmi"]


async def test_iq_to_a_session_that_ends_is_answered_with_an_error(tmp_path: Path) -> None:
    async with running(tmp_path, modules=options(resume_timeout=1)) as server:
        alice = await login(server, "alice@localhost/phone")
        bob, _ = await sm_login(server, "bob@localhost/phone")
        await bob.close()
        ended = on_end(server, bob)
        await alice.send(f"<iq to='bob@localhost/phone' type='get' id='v1'><query xmlns='{ns.VERSION}'/></iq>")
        assert alice.take() == []
        await wait(ended)
        (error,) = alice.take()
        assert (error.get("id"), error.get("from")) == ("v1", "bob@localhost/phone")
        assert condition(error) == "service-unavailable"


async def test_offline_messages_delivered_to_a_dying_session_come_back(tmp_path: Path) -> None:
    async with running(tmp_path, modules=options(resume_timeout=1)) as server:
        alice = await login(server, "alice@localhost/phone")
        await add_user(server, "bob")
        await chats(alice, "bob@localhost", ["while away 1", "while away 2"])
        bob, _ = await sm_login(server, "bob@localhost/phone")
        await bob.send(presence())
        first = [el for el in bob.take() if el.tag == MESSAGE]
        assert bodies(first) == ["while away 1", "while away 2"]
        assert await stored(server) == 0
        ended = on_end(server, bob)
        await bob.close()
        await wait(ended)
        again = await comes_online(server, "bob@localhost/tablet")
        assert bodies(again) == ["while away 1", "while away 2"]
        # Still the time each first reached the account, in the one delay it had.
        assert [stamps(el) for el in again] == [stamps(el) for el in first]
        assert all(len(stamps(el)) == 1 for el in again)


async def test_what_a_session_did_not_acknowledge_is_stored_with_the_time_it_came(tmp_path: Path) -> None:
    async with running(tmp_path, modules=options(resume_timeout=1)) as server:
        alice = await login(server, "alice@localhost/phone")
        bob, _ = await sm_login(server, "bob@localhost/phone")
        await chats(alice, "bob@localhost/phone", ["queued"])
        came = datetime.now(UTC)
        ended = on_end(server, bob)
        await bob.close()
        await wait(ended)  # a second of hibernation
        (stored_message,) = await comes_online(server, "bob@localhost/laptop")
        (stamp,) = stamps(stored_message)
        assert came - timedelta(seconds=0.5) < datetime.fromisoformat(stamp) <= came


# Exactly once across resources -----------------------------------------------------------------


async def test_message_another_resource_got_is_not_stored(tmp_path: Path) -> None:
    async with running(tmp_path, modules=options(resume_timeout=1)) as server:
        alice = await login(server, "alice@localhost/phone")
        laptop = await login(server, "bob@localhost/laptop")
        await laptop.send(presence())
        phone, _ = await sm_login(server, "bob@localhost/phone")
        await phone.send(presence())
        laptop.take()
        phone.take()
        await chats(alice, "bob@localhost", ["to both"])
        await chats(alice, "bob@localhost/phone", ["to the phone only"])
        assert bodies(laptop.take()) == ["to both"]
        assert bodies(phone.take()) == ["to both", "to the phone only"]
        ended = on_end(server, phone)
        await phone.close()
        await wait(ended)
        # RFC 6121 §8.5.3.2.1: the phone is gone, so the laptop, still online, gets what was only
        # for the phone (through offline storage, which got it back); "to both" it had already.
        got: list[str | None] = []
        while not got:
            got = bodies(await laptop.expect())
        assert got == ["to the phone only"]
        assert await stored(server) == 0


async def test_two_dying_resources_store_a_shared_message_once(tmp_path: Path) -> None:
    async with running(tmp_path, modules=options(resume_timeout=1)) as server:
        alice = await login(server, "alice@localhost/phone")
        phone, _ = await sm_login(server, "bob@localhost/phone")
        tablet, _ = await sm_login(server, "bob@localhost/tablet")
        for client in (phone, tablet):
            await client.send(presence())
        await chats(alice, "bob@localhost", ["shared"])
        assert bodies(phone.take()) == ["shared"]
        assert bodies(tablet.take()) == ["shared"]
        await all_ended((server, phone), (server, tablet))
        assert bodies(await comes_online(server, "bob@localhost/desk")) == ["shared"]


async def test_a_resource_that_acknowledged_answers_for_the_message(tmp_path: Path) -> None:
    async with running(tmp_path, modules=options(resume_timeout=1)) as server:
        alice = await login(server, "alice@localhost/phone")
        phone, _ = await sm_login(server, "bob@localhost/phone")
        tablet, _ = await sm_login(server, "bob@localhost/tablet")
        for client in (phone, tablet):
            await client.send(presence())
            client.take()
        await chats(alice, "bob@localhost", ["shared"])
        await tablet.send(ack(2))  # its own presence echo and the message
        ended = on_end(server, phone)
        await phone.close()
        await wait(ended)
        assert await stored(server) == 0


async def test_shutdown_keeps_what_clients_did_not_acknowledge(tmp_path: Path) -> None:
    async with running(tmp_path, modules=options()) as server:
        alice = await login(server, "alice@localhost/phone")
        phone, _ = await sm_login(server, "bob@localhost/phone")
        tablet, _ = await sm_login(server, "bob@localhost/tablet")
        await chats(alice, "bob@localhost/phone", ["to the hibernating phone"])
        await phone.close()
        await chats(alice, "bob@localhost/tablet", ["to the connected tablet"])
        assert bodies(tablet.take()) == ["to the connected tablet"]
    async with running(tmp_path, modules=options()) as server:
        # Each session's queue keeps its order; between sessions there is none to keep.
        got = bodies(await comes_online(server, "bob@localhost/desk"))
        assert len(got) == 2
        assert set(got) == {"to the connected tablet", "to the hibernating phone"}
