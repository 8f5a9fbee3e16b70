"""Fan-out of client events: every iterator sees every item; nothing that arrives unheard is lost."""

from __future__ import annotations

import gc

from schnack.client.feed import Feed


async def test_every_subscription_sees_every_item() -> None:
    feed: Feed[int] = Feed()
    first, second = feed.subscribe(), feed.subscribe()
    for item in (1, 2):
        feed.publish(item)
    feed.end()
    assert [i async for i in first] == [1, 2]
    assert [i async for i in second] == [1, 2]


async def test_items_without_a_listener_wait_for_the_first_one() -> None:
    feed: Feed[str] = Feed(backlog=2)
    for item in ("dropped", "kept", "kept too"):
        feed.publish(item)
    first = feed.subscribe()
    late = feed.subscribe()
    feed.publish("live")
    feed.end()
    assert [i async for i in first] == ["kept", "kept too", "live"]
    assert [i async for i in late] == ["live"]


async def test_a_dropped_subscription_unsubscribes() -> None:
    feed: Feed[int] = Feed()
    kept = feed.subscribe()
    dropped = feed.subscribe()
    del dropped
    gc.collect()
    assert len(list(feed._subscriptions)) == 1
    feed.publish(1)
    feed.end()
    assert [i async for i in kept] == [1]


async def test_after_the_end_new_subscriptions_end_at_once() -> None:
    feed: Feed[int] = Feed()
    feed.publish(7)
    feed.end()
    feed.publish(8)
    assert [i async for i in feed.subscribe()] == [7]
    assert [i async for i in feed.subscribe()] == []
