"""Bus messages: the wire encoding round-trips, and anything but version 1 is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schnack.server.cluster.messages import (
    VERSION,
    BusMessageError,
    Changed,
    Deliver,
    Done,
    NodeDown,
    Reply,
    Request,
    decode,
    encode,
    mark_number,
)


@given(st.text(), st.text(), st.text(), st.booleans())
def test_deliver_round_trips(to: str, sender: str, xml: str, copy: bool) -> None:
    message = Deliver(to, sender, xml, copy)
    assert decode(encode(message)) == message


@given(st.text(), st.text(), st.text(), st.booleans(), st.text(), st.text())
def test_deliver_asking_for_done_round_trips(to: str, sender: str, xml: str, copy: bool, node: str, token: str) -> None:
    message = Deliver(to, sender, xml, copy, f"{node}:{token}")
    assert decode(encode(message)) == message
    assert message.asker == node.partition(":")[0]


@given(st.text(), st.text(), st.text(), st.booleans(), st.sampled_from(["", "b:7"]),
       st.text(min_size=1), st.integers(min_value=1))
def test_a_marked_copy_round_trips(to: str, sender: str, xml: str, copy: bool, ask: str, occupancy: str,
                                   number: int) -> None:
    message = Deliver(to, sender, xml, copy, ask, f"{occupancy}:{number}")
    assert decode(encode(message)) == message
    assert mark_number(message.mark) == number


def test_node_down_and_done_round_trip() -> None:
    assert decode(encode(NodeDown("node-1"))) == NodeDown("node-1")
    assert decode(encode(Done("a:1f"))) == Done("a:1f")


def test_changed_round_trips() -> None:
    assert decode(encode(Changed("node-1", "blocklist", "bob@x"))) == Changed("node-1", "blocklist", "bob@x")
    assert encode(Changed("a", "push", "bob@x")) == b'[1,"changed","a","push","bob@x"]'


def test_a_request_and_its_reply_round_trip() -> None:
    request = Request("b:9c", "rooms", {"action": "show", "room": "r@groups.x"})
    assert decode(encode(request)) == request
    assert request.asker == "b"
    assert encode(request) == b'[1,"request","b:9c","rooms",{"action":"show","room":"r@groups.x"}]'
    assert decode(encode(Reply("b:9c", {"ok": True, "rooms": []}))) == Reply("b:9c", {"ok": True, "rooms": []})


@given(st.text(), st.text(min_size=1))
def test_done_carrying_a_refusal_round_trips(token: str, refusal: str) -> None:
    assert decode(encode(Done(token, refusal))) == Done(token, refusal)


def test_encoding_is_compact_and_versioned() -> None:
    data = encode(Deliver("b@x/r", "a@x/r", "<message/>"))
    assert data == b'[1,"deliver","b@x/r","a@x/r","<message/>"]'
    # The copy flag is written only when set, so a plain delivery keeps the three-field form.
    assert encode(Deliver("b@x/r", "", "<m/>", copy=True)) == b'[1,"deliver","b@x/r","","<m/>",true]'
    assert encode(Deliver("b@x/r", "", "<m/>", True, mark="f0:3")) == b'[1,"deliver","b@x/r","","<m/>",true,"","f0:3"]'
    # An acceptance keeps the one-field form that nodes of before the refusal field read.
    assert encode(Done("a:1f")) == b'[1,"done","a:1f"]'
    assert encode(Done("a:1f", "<message type='error'/>")) == b'[1,"done","a:1f","<message type=\'error\'/>"]'
    assert VERSION == 1


@pytest.mark.parametrize(("data", "error"), [
    (b'[2,"deliver","a","b","<m/>"]', "unsupported bus message version 2"),
    (b'[true,"deliver","a","b","<m/>"]', "unsupported bus message version True"),
    (b'["1","deliver","a","b","<m/>"]', "unsupported bus message version '1'"),
    (b'[1,"teleport"]', "unknown bus message kind 'teleport'"),
    (b'[1,7]', "unknown bus message kind 7"),
    (b'[1,"deliver","a","b"]', "deliver: needs to, from and xml strings"),
    (b'[1,"deliver","a","b",3]', "deliver: needs to, from and xml strings"),
    (b'[1,"deliver","a","b","<m/>",1]', "deliver: the copy flag must be a boolean"),
    (b'[1,"deliver","a","b","<m/>",true,true]', "deliver: the ask token must be a string node:id"),
    (b'[1,"deliver","a","b","<m/>",false,"nocolon"]', "deliver: the ask token must be a string node:id"),
    (b'[1,"deliver","a","b","<m/>",false,"a:1",1]', "deliver: the mark must be a string occupancy:number"),
    (b'[1,"deliver","a","b","<m/>",true,"","f0"]', "deliver: the mark must be a string occupancy:number"),
    (b'[1,"deliver","a","b","<m/>",true,"","f0:0"]', "deliver: the mark must be a string occupancy:number"),
    (b'[1,"deliver","a","b","<m/>",true,"",":2"]', "deliver: the mark must be a string occupancy:number"),
    (b'[1,"deliver","a","b","<m/>",true,"","f0:\xd9\xa3"]', "deliver: the mark must be a string occupancy:number"),
    (b'[1,"deliver","a","b","<m/>",true,"",3]', "deliver: the mark must be a string occupancy:number"),
    (b'[1,"deliver","a","b","<m/>",true,"","f0:1","x"]', "deliver: needs to, from and xml strings"),
    (b'[1,"deliver","a","b","<m/>",true,""]', "deliver: the ask token must be a string node:id"),
    (b'[1,"done"]', "done: needs a token"),
    (b'[1,"done",1]', "done: needs a token"),
    (b'[1,"done","a:1",""]', "done: the refusal must be a stanza's XML"),
    (b'[1,"done","a:1",true]', "done: the refusal must be a stanza's XML"),
    (b'[1,"done","a:1","<m/>","more"]', "done: needs a token"),
    (b'[1,"request","b:1","rooms"]', "request: needs a token node:id, a topic and a body"),
    (b'[1,"request","b1","rooms",{}]', "request: needs a token node:id, a topic and a body"),
    (b'[1,"request","b:1","",{}]', "request: needs a token node:id, a topic and a body"),
    (b'[1,"request","b:1","rooms",[]]', "request: needs a token node:id, a topic and a body"),
    (b'[1,"reply","b:1"]', "reply: needs a token and a body"),
    (b'[1,"reply","b:1","yes"]', "reply: needs a token and a body"),
    (b'[1,"node-down"]', "node-down: needs a node name"),
    (b'[1,"changed","a","push"]', "changed: needs a node, a store and an account"),
    (b'[1,"changed","a","","bob@x"]', "changed: needs a node, a store and an account"),
    (b'[1,"changed","a","push",7]', "changed: needs a node, a store and an account"),
    (b'{"v":1}', "expected [version, kind, ...]"),
    (b"[1]", "expected [version, kind, ...]"),
    (b"\xff\xfe", "not a bus message"),
    (b"", "not a bus message"),
])
def test_bad_messages_are_refused(data: bytes, error: str) -> None:
    with pytest.raises(BusMessageError, match=error.replace("[", r"\[")):
        decode(data)
