"""Sessions and the registry of bound resources (RFC 6120 §7, RFC 6121 §4)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element

import pytest

from schnack.server.sessions import Session, SessionRegistry
from schnack.xmpp.errors import StreamError
from schnack.xmpp.jid import JID


class Transport:
    """Records what the session sends and how it is closed."""

    def __init__(self) -> None:
        self.sent: list[Element] = []
        self.closed_with: list[StreamError | None] = []

    def send(self, el: Element) -> None:
        self.sent.append(el)

    def close(self, error: StreamError | None = None) -> None:
        self.closed_with.append(error)


def session(jid: str, transport: Transport | None = None) -> Session:
    return Session(JID.parse(jid), transport or Transport(), id=f"id-{jid}", secure=True, peer="127.0.0.1:1")


def test_add_get_and_resources() -> None:
    registry = SessionRegistry()
    desk, phone, bob = session("alice@localhost/desk"), session("alice@localhost/phone"), session("bob@localhost/x")
    for s in (desk, phone, bob):
        assert registry.add(s) is None
    assert len(registry) == 3
    assert registry.get(JID.parse("alice@localhost/desk")) is desk
    assert registry.get(JID.parse("Alice@LOCALHOST/phone")) is phone
    assert registry.get(JID.parse("alice@localhost/laptop")) is None
    assert registry.get(JID.parse("alice@localhost")) is None
    assert registry.get(JID.parse("carol@localhost/desk")) is None
    assert registry.resources(JID.parse("alice@localhost")) == [desk, phone]
    assert registry.resources(JID.parse("carol@localhost")) == []
    assert registry.is_online(JID.parse("alice@localhost"))
    assert not registry.is_online(JID.parse("carol@localhost"))
    assert set(registry) == {desk, phone, bob}


def test_resources_are_case_sensitive() -> None:
    """RFC 7622 §3.4: resourceparts are compared as they are, unlike localparts."""
    registry = SessionRegistry()
    upper, lower = session("alice@localhost/Desk"), session("alice@localhost/desk")
    registry.add(upper)
    registry.add(lower)
    assert len(registry) == 2
    assert registry.get(JID.parse("alice@localhost/Desk")) is upper


def test_remove() -> None:
    registry = SessionRegistry()
    desk, phone = session("alice@localhost/desk"), session("alice@localhost/phone")
    registry.add(desk)
    registry.add(phone)
    assert registry.remove(desk)
    assert len(registry) == 1
    assert registry.resources(JID.parse("alice@localhost")) == [phone]
    assert registry.is_online(JID.parse("alice@localhost"))
    assert registry.remove(phone)
    assert len(registry) == 0
    assert not registry.is_online(JID.parse("alice@localhost"))
    assert list(registry) == []
    # A second removal is a no-op.
    assert not registry.remove(phone)
    assert len(registry) == 0


def test_a_replaced_session_is_returned_and_not_removed_later() -> None:
    """RFC 6120 §7.7.2.2: the new session takes the resource; the old one's teardown leaves it alone."""
    registry = SessionRegistry()
    old, new = session("alice@localhost/desk"), session("alice@localhost/desk")
    registry.add(old)
    assert registry.add(new) is old
    assert len(registry) == 1
    assert registry.get(JID.parse("alice@localhost/desk")) is new
    assert not registry.remove(old)
    assert registry.get(JID.parse("alice@localhost/desk")) is new
    assert len(registry) == 1
    assert registry.remove(new)
    assert len(registry) == 0


def test_iterating_while_sessions_come_and_go() -> None:
    """Closing every session of a listing (shutdown, kick) removes them as the loop runs."""
    registry = SessionRegistry()
    sessions = [session(f"u{i}@localhost/r{j}") for i in range(3) for j in range(2)]
    for s in sessions:
        registry.add(s)
    visited = []
    for s in registry:
        visited.append(s)
        registry.remove(s)
        if s is sessions[0]:
            registry.add(session("late@localhost/x"))
    assert visited == sessions
    assert [str(s.jid) for s in registry] == ["late@localhost/x"]
    for s in list(registry.resources(JID.parse("late@localhost"))):
        registry.remove(s)
    assert len(registry) == 0


def test_session_basics() -> None:
    transport = Transport()
    s = session("alice@localhost/desk", transport)
    assert s.username == "alice"
    assert s.host == "localhost"
    assert not s.available and not s.interested and s.presence is None and s.priority == 0
    assert "alice@localhost/desk" in repr(s)
    el = Element("message")
    s.send(el)
    assert transport.sent == [el]
    error = StreamError("conflict")
    s.close(error)
    assert transport.closed_with == [error]


def test_a_closed_session_drops_what_is_sent() -> None:
    transport = Transport()
    s = session("alice@localhost/desk", transport)
    s.closed = True
    s.send(Element("message"))
    assert transport.sent == []


@dataclass
class Counter:
    value: int = 0


@dataclass
class Seen:
    ids: list[str] = field(default_factory=list)


def test_slots_are_typed_per_session_and_per_class() -> None:
    a, b = session("alice@localhost/desk"), session("bob@localhost/desk")
    counter = a.slot(Counter)
    counter.value += 1
    assert a.slot(Counter) is counter
    assert a.slot(Counter).value == 1
    assert b.slot(Counter).value == 0
    assert b.slot(Counter) is not counter
    a.slot(Seen).ids.append("m1")
    assert a.slot(Seen).ids == ["m1"]
    assert b.slot(Seen).ids == []


def test_no_ad_hoc_fields_on_sessions() -> None:
    s = session("alice@localhost/desk")
    with pytest.raises(AttributeError):
        s.carbons = True  # type: ignore[attr-defined]


def test_output_stages_run_by_priority_and_may_hold_back() -> None:
    transport = Transport()
    s = session("alice@localhost/desk", transport)
    seen: list[str] = []
    held: list[tuple[Element, Callable[[Element], None]]] = []

    def counting(el: Element, forward: Callable[[Element], None]) -> None:
        seen.append(f"count {el.tag}")
        forward(el)

    def holding(el: Element, forward: Callable[[Element], None]) -> None:
        if el.tag == "presence":
            held.append((el, forward))
        else:
            forward(el)

    s.add_output_stage(counting, priority=0)
    s.add_output_stage(holding, priority=10)
    s.send(Element("presence"))
    s.send(Element("message"))
    assert [el.tag for el in transport.sent] == ["message"]
    assert seen == ["count message"]
    for el, forward in held:
        forward(el)
    assert [el.tag for el in transport.sent] == ["message", "presence"]
    assert seen == ["count message", "count presence"]


def test_a_stage_sees_output_of_a_closed_session() -> None:
    """Stream management keeps what a dead connection could not take; the transport gets nothing."""
    transport = Transport()
    s = session("alice@localhost/desk", transport)
    kept: list[Element] = []

    def keeping(el: Element, forward: Callable[[Element], None]) -> None:
        kept.append(el)
        forward(el)

    s.add_output_stage(keeping)
    s.closed = True
    s.send(Element("message"))
    assert [el.tag for el in kept] == ["message"] and transport.sent == []
