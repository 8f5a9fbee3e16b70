"""XEP-0352 Client State Indication: what an inactive client gets at once, what waits, what collapses."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.c2s import C2SStream
from schnack.server.config import ConfigError
from schnack.server.modules.csi import ClientStateIndication, Saved
from schnack.server.sessions import Forward, Session
from schnack.xmpp import ns
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.csi import FEATURE
from schnack.xmpp.xml import serialize

from ...harness import Client, MemoryConnection, add_user, running, xml
from .contacts import presence, roster
from .messaging import OMEMO, body, login, session_of

INACTIVE = "<inactive xmlns='urn:xmpp:csi:0'/>"
ACTIVE = "<active xmlns='urn:xmpp:csi:0'/>"
DELAY = f"{{{ns.DELAY}}}delay"
PHONE = "alice@localhost/phone"
CHAT_STATES = "http://jabber.org/protocol/chatstates"


def stanza(text: str) -> Element:
    """A stanza as the server has it for a client: in jabber:client."""
    return parse_frame(text.replace(">", " xmlns='jabber:client'>", 1).encode(), 10**6)


def to_phone(kind: str, attrs: str = "", inner: str = "") -> str:
    return f"<{kind} to='{PHONE}' {attrs}>{inner}</{kind}>"


def status(sender: str, show: str, text: str = "") -> Element:
    inner = f"<show>{show}</show>" + (f"<status>{text}</status>" if text else "")
    return stanza(to_phone("presence", f"from='{sender}'", inner))


def chat_state(sender: str, state: str, extra: str = "") -> Element:
    return stanza(
        to_phone("message", f"from='{sender}' type='chat'", f"<{state} xmlns='{CHAT_STATES}'/>{extra}")
    )


def size(el: Element) -> int:
    return len(serialize(el, ns.CLIENT).encode())


def csi(server: Server) -> ClientStateIndication:
    module = server.modules["csi"]
    assert isinstance(module, ClientStateIndication)
    return module


async def inactive_phone(server: Server) -> tuple[Client, Session]:
    client = await login(server, PHONE)
    await client.send(INACTIVE)
    assert client.take() == []
    return client, session_of(client)


def unstamped(el: Element) -> str:
    """``el`` without the delay stamp a held stanza gets, to compare with what was sent."""
    copy = Element(el.tag, el.attrib)
    copy.text = el.text
    copy.extend(child for child in el if child.tag != DELAY)
    return xml(copy)


def stamp_of(el: Element) -> datetime:
    (delay,) = el.findall(DELAY)
    assert delay.get("from") == "localhost", xml(el)
    return datetime.strptime(delay.get("stamp", ""), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


# §4.1 discovery ----------------------------------------------------------------------------------


async def test_feature_offered_once_authenticated(server: Server) -> None:
    conn = MemoryConnection()
    stream = C2SStream(server, conn)
    opening = (f"{{{ns.FRAMING}}}open", {"to": "localhost", "version": "1.0"}, None)
    await stream.on_open(*opening)
    assert conn.out[-1].find(FEATURE) is None
    stream.username = "alice"
    await stream.on_open(*opening)
    assert conn.out[-1].find(FEATURE) is not None


# What waits and what goes at once ----------------------------------------------------------------

HELD = {
    "available presence": to_phone("presence", "from='bob@localhost/pc'", "<show>away</show>"),
    "unavailable presence": to_phone("presence", "from='bob@localhost/pc' type='unavailable'"),
    "room occupant": to_phone(
        "presence",
        "from='room@muc.example.org/carol'",
        "<x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='participant'/></x>",
    ),
    "chat state": to_phone(
        "message", "from='bob@localhost/pc' type='chat'", f"<composing xmlns='{CHAT_STATES}'/>"
    ),
    "group chat state": to_phone(
        "message", "from='room@muc.example.org/carol' type='groupchat'", f"<paused xmlns='{CHAT_STATES}'/>"
    ),
    "PEP notification": to_phone(
        "message",
        "from='bob@localhost' type='headline'",
        "<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='urn:xmpp:avatar:metadata'/></event>",
    ),
    "reaction": to_phone(
        "message",
        "from='bob@localhost/pc' type='chat'",
        "<reactions xmlns='urn:xmpp:reactions:0' id='m1'><reaction>👍</reaction></reactions>",
    ),
    "carbon of a chat state": to_phone(
        "message",
        "from='alice@localhost' type='chat'",
        "<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
        f"<message xmlns='jabber:client' from='bob@localhost/pc' to='alice@localhost/laptop' type='chat'>"
        f"<composing xmlns='{CHAT_STATES}'/></message></forwarded></received>",
    ),
}

URGENT = {
    "chat message": to_phone("message", "from='bob@localhost/pc' type='chat'", "<body>hi</body>"),
    "normal message": to_phone("message", "from='bob@localhost/pc'", "<body>hi</body>"),
    "group chat message": to_phone(
        "message", "from='room@muc.example.org/carol' type='groupchat'", "<body>hi</body>"
    ),
    "room subject": to_phone(
        "message", "from='room@muc.example.org' type='groupchat'", "<subject>plans</subject>"
    ),
    "OMEMO message": to_phone("message", "from='bob@localhost/pc' type='chat'", OMEMO),
    "OMEMO 2 message": to_phone(
        "message",
        "from='bob@localhost/pc' type='chat'",
        "<encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'><keys jid='alice@localhost'><key rid='2'>a2V5</key>"
        "</keys></header><payload>cGF5bG9hZA==</payload></encrypted>",
    ),
    "receipt": to_phone(
        "message", "from='bob@localhost/pc' type='chat'", "<received xmlns='urn:xmpp:receipts' id='m1'/>"
    ),
    "displayed marker": to_phone(
        "message",
        "from='bob@localhost/pc' type='chat'",
        "<displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/>",
    ),
    "received marker": to_phone(
        "message",
        "from='bob@localhost/pc' type='chat'",
        "<received xmlns='urn:xmpp:chat-markers:0' id='m1'/>",
    ),
    "call proposal": to_phone(
        "message",
        "from='bob@localhost/pc' type='chat'",
        "<propose xmlns='urn:xmpp:jingle-message:0' id='c1'><description xmlns='urn:xmpp:jingle:apps:rtp:1' "
        "media='audio'/></propose>",
    ),
    "call retraction": to_phone(
        "message",
        "from='bob@localhost/pc' type='chat'",
        "<retract xmlns='urn:xmpp:jingle-message:0' id='c1'/>",
    ),
    "carbon of a message sent elsewhere": to_phone(
        "message",
        "from='alice@localhost' type='chat'",
        "<sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
        "<message xmlns='jabber:client' from='alice@localhost/laptop' to='bob@localhost' type='chat'>"
        "<body>on my way</body></message></forwarded></sent>",
    ),
    "archive result": to_phone(
        "message",
        "from='alice@localhost'",
        "<result xmlns='urn:xmpp:mam:2' queryid='q1' id='a1'><forwarded xmlns='urn:xmpp:forward:0'>"
        "<message xmlns='jabber:client' from='bob@localhost/pc' type='chat'>"
        f"<active xmlns='{CHAT_STATES}'/></message></forwarded></result>",
    ),
    "room invitation": to_phone(
        "message",
        "from='room@muc.example.org'",
        "<x xmlns='http://jabber.org/protocol/muc#user'><invite from='bob@localhost'/></x>",
    ),
    "direct invitation": to_phone(
        "message", "from='bob@localhost/pc'", "<x xmlns='jabber:x:conference' jid='room@muc.example.org'/>"
    ),
    "message error": to_phone(
        "message",
        "from='bob@localhost' type='error'",
        "<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
    ),
    "subscription request": to_phone("presence", "from='bob@localhost' type='subscribe'"),
    "subscription approval": to_phone("presence", "from='bob@localhost' type='subscribed'"),
    "unsubscription": to_phone("presence", "from='bob@localhost' type='unsubscribe'"),
    "subscription cancelled": to_phone("presence", "from='bob@localhost' type='unsubscribed'"),
    "presence error": to_phone(
        "presence",
        "from='bob@localhost' type='error'",
        "<error type='cancel'><remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
    ),
    "own occupant in a room": to_phone(
        "presence",
        "from='room@muc.example.org/alice'",
        "<x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='owner' role='moderator'/>"
        "<status code='110'/></x>",
    ),
    "iq request": to_phone("iq", "from='localhost' type='get' id='p1'", "<ping xmlns='urn:xmpp:ping'/>"),
    "roster push": to_phone(
        "iq", "type='set' id='r1'", "<query xmlns='jabber:iq:roster'><item jid='bob@localhost'/></query>"
    ),
    "iq result": to_phone("iq", "from='localhost' type='result' id='q1'"),
}


@pytest.mark.parametrize("text", HELD.values(), ids=HELD.keys())
async def test_held_until_active_then_stamped(server: Server, text: str) -> None:
    phone, session = await inactive_phone(server)
    before = datetime.now(UTC)
    session.send(stanza(text))
    after = datetime.now(UTC)
    assert phone.take() == []
    await phone.send(ACTIVE)
    (got,) = phone.take()
    assert unstamped(got) == xml(stanza(text))
    assert before - timedelta(milliseconds=1) <= stamp_of(got) <= after
    # Active again: nothing waits.
    session.send(stanza(text))
    assert [xml(el) for el in phone.take()] == [xml(stanza(text))]


@pytest.mark.parametrize("text", URGENT.values(), ids=URGENT.keys())
async def test_urgent_goes_at_once_after_what_was_held(server: Server, text: str) -> None:
    phone, session = await inactive_phone(server)
    waiting = status("carol@localhost/pc", "away")
    session.send(waiting)
    assert phone.take() == []
    session.send(stanza(text))
    held, urgent = phone.take()
    assert unstamped(held) == xml(waiting)
    assert xml(urgent) == xml(stanza(text))
    # Nothing held any more: the next urgent stanza comes alone.
    session.send(stanza(text))
    assert [xml(el) for el in phone.take()] == [xml(stanza(text))]


async def test_flush_keeps_the_order(server: Server) -> None:
    phone, session = await inactive_phone(server)
    sent = [
        status("bob@localhost/pc", "away"),
        stanza(HELD["PEP notification"]),
        chat_state("carol@localhost/pc", "composing"),
        status("dave@localhost/pc", "xa"),
    ]
    for el in sent:
        session.send(el)
    message = stanza(URGENT["OMEMO message"])
    session.send(message)
    got = phone.take()
    assert [unstamped(el) for el in got[:-1]] == [xml(el) for el in sent]
    assert xml(got[-1]) == xml(message)
    assert got[-1].find(DELAY) is None


async def test_a_stanza_already_stamped_keeps_its_own_delay(server: Server) -> None:
    phone, session = await inactive_phone(server)
    old = stanza(
        to_phone(
            "presence",
            "from='bob@localhost/pc'",
            "<delay xmlns='urn:xmpp:delay' from='bob@localhost/pc' stamp='2002-09-10T23:41:07Z'/>",
        )
    )
    session.send(old)
    await phone.send(ACTIVE)
    (got,) = phone.take()
    assert xml(got) == xml(old)


# Collapse ------------------------------------------------------------------------------------------


async def test_only_the_latest_presence_of_each_full_jid(server: Server) -> None:
    phone, session = await inactive_phone(server)
    updates = [
        status("bob@localhost/pc", "away", "lunch"),
        status("bob@localhost/tablet", "away"),
        status("carol@localhost/pc", "chat"),
        status("bob@localhost/pc", "xa", "gone home"),
        stanza(to_phone("presence", "from='bob@localhost/tablet' type='unavailable'")),
        status("bob@localhost/pc", "dnd"),
    ]
    for el in updates:
        session.send(el)
    assert phone.take() == []
    await phone.send(ACTIVE)
    got = phone.take()
    # Each survivor sits where its latest update came.
    assert [unstamped(el) for el in got] == [xml(updates[i]) for i in (2, 4, 5)]
    dropped = [updates[i] for i in (0, 1, 3)]
    assert csi(server).saved(session) == Saved(3, sum(size(el) for el in dropped))


async def test_chat_states_collapse_and_give_way_to_the_message(server: Server) -> None:
    phone, session = await inactive_phone(server)
    composing = chat_state("bob@localhost/pc", "composing")
    paused = chat_state("bob@localhost/pc", "paused")
    carol = chat_state("carol@localhost/pc", "composing")
    for el in (composing, carol, paused):
        session.send(el)
    assert phone.take() == []
    # The message carries the chat state that ends Bob's typing: the held one is never sent.
    message = stanza(
        to_phone("message", "from='bob@localhost/pc' type='chat'", f"{OMEMO}<active xmlns='{CHAT_STATES}'/>")
    )
    session.send(message)
    got = phone.take()
    assert [unstamped(el) for el in got[:-1]] == [xml(carol)]
    assert xml(got[-1]) == xml(message)
    assert csi(server).saved(session) == Saved(2, size(composing) + size(paused))


async def test_a_message_without_chat_state_supersedes_nothing(server: Server) -> None:
    phone, session = await inactive_phone(server)
    composing = chat_state("bob@localhost/pc", "composing")
    session.send(composing)
    message = stanza(URGENT["OMEMO message"])
    session.send(message)
    got = phone.take()
    assert [unstamped(got[0]), xml(got[1])] == [xml(composing), xml(message)]
    assert csi(server).saved(session) == Saved(0, 0)


async def test_a_chat_state_with_other_content_is_never_dropped(server: Server) -> None:
    """A reaction that carries a chat state too is content: a later chat state supersedes only the state."""
    phone, session = await inactive_phone(server)
    reaction = chat_state(
        "bob@localhost/pc", "active", "<reactions xmlns='urn:xmpp:reactions:0' id='m1'><reaction>👍</reaction></reactions>"
    )
    composing = chat_state("bob@localhost/pc", "composing")
    paused = chat_state("bob@localhost/pc", "paused")
    for el in (reaction, composing, paused):
        session.send(el)
    await phone.send(ACTIVE)
    assert [unstamped(el) for el in phone.take()] == [xml(reaction), xml(paused)]
    assert csi(server).saved(session) == Saved(1, size(composing))


async def test_carbon_chat_states_collapse_per_conversation(server: Server) -> None:
    phone, session = await inactive_phone(server)

    def carbon(state: str, peer: str) -> Element:
        inner = (
            f"<message xmlns='jabber:client' from='alice@localhost/laptop' to='{peer}' type='chat'>"
            f"<{state} xmlns='{CHAT_STATES}'/></message>"
        )
        return stanza(
            to_phone(
                "message",
                "from='alice@localhost' type='chat'",
                f"<sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>{inner}</forwarded></sent>",
            )
        )

    sent = [
        carbon("composing", "bob@localhost"),
        carbon("composing", "carol@localhost"),
        carbon("paused", "bob@localhost"),
    ]
    for el in sent:
        session.send(el)
    await phone.send(ACTIVE)
    assert [unstamped(el) for el in phone.take()] == [xml(sent[1]), xml(sent[2])]
    assert csi(server).saved(session).stanzas == 1


# Through the server's routing ---------------------------------------------------------------------


async def test_contact_presence_waits_and_a_message_does_not(server: Server) -> None:
    alice = await login(server, PHONE)
    bob = await login(server, "bob@localhost/pc")
    for client in (alice, bob):
        await roster(client)
        await client.send(presence())
    await alice.send(presence("subscribe", "bob@localhost"))
    await bob.send(presence("subscribed", "alice@localhost"))
    alice.take()
    bob.take()
    await alice.send(INACTIVE)
    for show in ("away", "xa", "dnd"):
        await bob.send(f"<presence><show>{show}</show></presence>")
    assert alice.take() == []
    await bob.send(f"<message to='alice@localhost' type='chat' id='m1'><body>call me</body>{OMEMO}</message>")
    latest, message = alice.take()
    assert latest.get("from") == "bob@localhost/pc"
    assert latest.findtext(f"{{{ns.CLIENT}}}show") == "dnd"
    assert body(message) == "call me"
    assert csi(server).saved(session_of(alice)).stanzas == 2


async def test_active_sends_the_held_before_answering_the_next_request(server: Server) -> None:
    phone, session = await inactive_phone(server)
    waiting = status("bob@localhost/pc", "away")
    session.send(waiting)
    # XEP-0352 §5.1: <active/> is acted on before the request that follows it.
    await phone.send(ACTIVE)
    await phone.send("<iq type='get' id='ping1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    held, pong = phone.take()
    assert unstamped(held) == xml(waiting)
    assert (pong.get("id"), pong.get("type")) == ("ping1", "result")


async def test_inactive_twice_holds_once_and_active_when_active_does_nothing(server: Server) -> None:
    phone = await login(server, PHONE)
    session = session_of(phone)
    await phone.send(ACTIVE)
    assert phone.take() == [] and not phone.conn.closed
    await phone.send(INACTIVE)
    await phone.send(INACTIVE)
    waiting = status("bob@localhost/pc", "away")
    session.send(waiting)
    assert phone.take() == []
    await phone.send(ACTIVE)
    await phone.send(ACTIVE)
    assert [unstamped(el) for el in phone.take()] == [xml(waiting)]


async def test_inactive_before_binding_leaves_the_stream_active(server: Server) -> None:
    await add_user(server, "alice")
    conn = MemoryConnection()
    stream = C2SStream(server, conn)
    await stream.on_open(f"{{{ns.FRAMING}}}open", {"to": "localhost", "version": "1.0"}, None)
    stream.username = "alice"
    await stream.on_element(parse_frame(INACTIVE.encode(), 10**6))
    assert not stream.closed
    bind = f"<iq type='set' id='b1' xmlns='{ns.CLIENT}'><bind xmlns='{ns.BIND}'><resource>phone</resource></bind></iq>"
    await stream.on_element(parse_frame(bind.encode(), 10**6))
    assert stream.session is not None
    conn.out.clear()
    update = status("bob@localhost/pc", "away")
    stream.session.send(update)
    assert [xml(el) for el in conn.out] == [xml(update)]


# Bounds -------------------------------------------------------------------------------------------


async def test_too_many_held_sends_them_all(tmp_path: Path) -> None:
    async with running(tmp_path, modules={"csi": {"max_held": 3}}) as server:
        phone, session = await inactive_phone(server)
        sent = [status(f"contact{i}@localhost/pc", "away") for i in range(4)]
        for el in sent[:3]:
            session.send(el)
        assert phone.take() == []
        session.send(sent[3])
        assert [unstamped(el) for el in phone.take()] == [xml(el) for el in sent]
        # The count starts again.
        session.send(status("contact0@localhost/pc", "xa"))
        assert phone.take() == []


async def test_too_many_bytes_held_sends_them_all(tmp_path: Path) -> None:
    async with running(tmp_path, modules={"csi": {"max_held_bytes": 1024}}) as server:
        phone, session = await inactive_phone(server)
        sent = [status(f"contact{i}@localhost/pc", "away", "x" * 400) for i in range(3)]
        for el in sent[:2]:
            session.send(el)
        assert phone.take() == []
        session.send(sent[2])
        assert [unstamped(el) for el in phone.take()] == [xml(el) for el in sent]


@pytest.mark.parametrize(("option", "value"), [("max_held", 0), ("max_held_bytes", 100)])
async def test_bounds_are_checked(tmp_path: Path, option: str, value: int) -> None:
    with pytest.raises(ConfigError) as raised:
        async with running(tmp_path, modules={"csi": {option: value}}):
            pass
    assert raised.value.key == f"modules.csi.{option}"


# Sessions that end --------------------------------------------------------------------------------


async def test_session_end_drops_presence_passes_the_rest_on_and_logs_the_saving(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    phone, session = await inactive_phone(server)
    # What a later stage (stream management's place) sees of the session's output.
    downstream: list[Element] = []

    def record(el: Element, forward: Forward) -> None:
        downstream.append(el)
        forward(el)

    session.add_output_stage(record, priority=0)
    message = stanza(URGENT["OMEMO message"])
    session.send(message)
    assert [xml(el) for el in downstream] == [xml(message)]
    old = status("bob@localhost/pc", "away", "secret plans")
    new = status("bob@localhost/pc", "dnd", "more secret plans")
    typing = chat_state("bob@localhost/pc", "composing")
    notification = stanza(HELD["PEP notification"])
    for el in (old, notification, typing, new):
        session.send(el)
    assert len(downstream) == 1
    with caplog.at_level(logging.INFO, logger="schnack.server.modules.csi"):
        await phone.close()
    assert [unstamped(el) for el in downstream[1:]] == [xml(notification)]
    saved = csi(server).saved(session)
    assert saved == Saved(3, size(old) + size(typing) + size(new))
    (record_,) = [r for r in caplog.records if r.name == "schnack.server.modules.csi"]
    assert record_.levelno == logging.INFO
    text = record_.getMessage()
    assert PHONE in text and "3 stanzas" in text and f"{saved.bytes} bytes" in text
    assert "secret" not in text


async def test_a_session_that_never_went_inactive_logs_nothing(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    phone = await login(server, PHONE)
    with caplog.at_level(logging.INFO, logger="schnack.server.modules.csi"):
        await phone.close()
    assert not [r for r in caplog.records if r.name == "schnack.server.modules.csi"]
    assert csi(server).saved(session_of(phone)) == Saved(0, 0)


async def test_a_resumed_stream_begins_active(server: Server) -> None:
    phone, session = await inactive_phone(server)
    waiting = status("bob@localhost/pc", "away")
    session.send(waiting)
    # XEP-0198 resumption on a new connection: XEP-0352 §5.2, the state is not carried over.
    conn = MemoryConnection()
    stream = C2SStream(server, conn)
    await phone.stream.let_go()
    stream.resume(session)
    update = status("carol@localhost/pc", "xa")
    session.send(update)
    held, now = conn.out
    assert unstamped(held) == xml(waiting)
    assert xml(now) == xml(update)
    session.send(status("dave@localhost/pc", "away"))
    assert len(conn.out) == 3
    # The old connection only heard that it was replaced.
    assert [el.tag for el in phone.take()] == [f"{{{ns.STREAMS}}}error", f"{{{ns.FRAMING}}}close"]
