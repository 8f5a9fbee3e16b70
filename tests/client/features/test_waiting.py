"""Messages waiting for their sender's OMEMO keys: kept in order, bounded, one try at a time."""

from __future__ import annotations

from schnack.client.features.waiting import Waiting
from schnack.xmpp.jid import JID

ALICE = JID.parse("alice@localhost")
BOB = JID.parse("bob@localhost")


def test_the_oldest_is_given_up_beyond_the_limit() -> None:
    waiting: Waiting[int, str] = Waiting()
    assert waiting.keep(1, ALICE, "first", 2) == []
    assert waiting.keep(2, BOB, "second", 2) == []
    assert waiting.keep(3, ALICE, "third", 2) == ["first"]
    assert (list(waiting), waiting.first()) == ([2, 3], "second")


def test_a_sender_s_messages_are_taken_out_in_order_once_per_try() -> None:
    waiting: Waiting[int, str] = Waiting()
    for key, (sender, text) in enumerate([(ALICE, "a1"), (BOB, "b1"), (ALICE, "a2")]):
        waiting.keep(key, sender, text, 10)
    assert waiting.due(ALICE) == [(0, "a1"), (2, "a2")]
    assert waiting.due(ALICE) == []  # under a try already
    waiting.tried(0)
    assert waiting.drop(2) and not waiting.drop(2)
    assert waiting.due(ALICE) == [(0, "a1")]
    assert 1 in waiting and len(waiting) == 2
