"""The hook registry: priority order, stopping on a result, collecting, changes while firing."""

from __future__ import annotations

from typing import Any

import pytest

from schnack.server.hooks import HANDLED, Hooks


class Recorder:
    """Handlers that note their name when called and return what they were told to."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def handler(self, name: str, result: Any = None) -> Any:
        async def handle(*args: Any) -> Any:
            self.calls.append(name)
            return result

        return handle


async def test_highest_priority_first_and_equal_priorities_in_registration_order() -> None:
    hooks, rec = Hooks(), Recorder()
    hooks.add("event", rec.handler("low"), priority=-10)
    hooks.add("event", rec.handler("default-1"))
    hooks.add("event", rec.handler("high"), priority=10)
    hooks.add("event", rec.handler("default-2"))
    hooks.add("event", rec.handler("higher"), priority=100)
    assert await hooks.fire("event") is None
    assert rec.calls == ["higher", "high", "default-1", "default-2", "low"]


async def test_fire_stops_at_the_first_result() -> None:
    hooks, rec = Hooks(), Recorder()
    hooks.add("event", rec.handler("passes"), priority=5)
    hooks.add("event", rec.handler("handles", HANDLED))
    hooks.add("event", rec.handler("never"), priority=-5)
    assert await hooks.fire("event") is HANDLED
    assert rec.calls == ["passes", "handles"]


async def test_falsy_results_other_than_none_still_stop_the_chain() -> None:
    hooks, rec = Hooks(), Recorder()
    hooks.add("event", rec.handler("empty", []))
    hooks.add("event", rec.handler("never"), priority=-1)
    assert await hooks.fire("event") == []
    assert rec.calls == ["empty"]


async def test_handlers_get_the_arguments() -> None:
    hooks = Hooks()
    seen: list[tuple[Any, ...]] = []

    async def handler(*args: Any) -> None:
        seen.append(args)

    hooks.add("event", handler)
    await hooks.fire("event", 1, "two")
    await hooks.fire_all("event", 3)
    assert seen == [(1, "two"), (3,)]


async def test_fire_all_runs_every_handler_and_collects_in_order() -> None:
    hooks, rec = Hooks(), Recorder()
    hooks.add("event", rec.handler("b", "B"))
    hooks.add("event", rec.handler("a", "A"), priority=1)
    hooks.add("event", rec.handler("c"))
    assert await hooks.fire_all("event") == ["A", "B", None]
    assert rec.calls == ["a", "b", "c"]


async def test_an_event_nobody_listens_to() -> None:
    hooks = Hooks()
    assert not hooks.has("nothing")
    assert await hooks.fire("nothing") is None
    assert await hooks.fire_all("nothing") == []


async def test_events_are_separate() -> None:
    hooks, rec = Hooks(), Recorder()
    hooks.add("message/bare", rec.handler("bare"))
    hooks.add("message/full", rec.handler("full"))
    await hooks.fire("message/full")
    assert rec.calls == ["full"]


async def test_remove() -> None:
    hooks, rec = Hooks(), Recorder()
    keep, drop = rec.handler("keep"), rec.handler("drop")
    hooks.add("event", keep)
    hooks.add("event", drop)
    hooks.remove("event", drop)
    await hooks.fire("event")
    assert rec.calls == ["keep"]
    hooks.remove("event", keep)
    assert not hooks.has("event")
    # Removing what is not there is harmless.
    hooks.remove("event", keep)
    hooks.remove("never-added", keep)


async def test_the_same_handler_on_two_events_is_removed_from_one_only() -> None:
    hooks, rec = Hooks(), Recorder()
    handler = rec.handler("h")
    hooks.add("one", handler)
    hooks.add("two", handler)
    hooks.remove("one", handler)
    assert not hooks.has("one") and hooks.has("two")


@pytest.mark.parametrize("fire", ["fire", "fire_all"])
async def test_a_handler_removing_itself_while_firing_does_not_skip_the_next(fire: str) -> None:
    """One-shot handlers unsubscribe when called; the rest of the chain must still run."""
    hooks, rec = Hooks(), Recorder()

    async def once(*_args: Any) -> None:
        rec.calls.append("once")
        hooks.remove("event", once)

    hooks.add("event", once, priority=1)
    hooks.add("event", rec.handler("second"))
    hooks.add("event", rec.handler("third"))
    await getattr(hooks, fire)("event")
    assert rec.calls == ["once", "second", "third"]
    rec.calls.clear()
    await getattr(hooks, fire)("event")
    assert rec.calls == ["second", "third"]


@pytest.mark.parametrize("fire", ["fire", "fire_all"])
async def test_a_handler_added_while_firing_runs_from_the_next_event_on(fire: str) -> None:
    hooks, rec = Hooks(), Recorder()
    late = rec.handler("late")

    async def adder(*_args: Any) -> None:
        rec.calls.append("adder")
        if late not in added:
            added.append(late)
            hooks.add("event", late, priority=100)

    added: list[Any] = []
    hooks.add("event", adder)
    hooks.add("event", rec.handler("after"), priority=-1)
    await getattr(hooks, fire)("event")
    assert rec.calls == ["adder", "after"]
    rec.calls.clear()
    await getattr(hooks, fire)("event")
    assert rec.calls == ["late", "adder", "after"]


async def test_an_exception_reaches_the_caller() -> None:
    """The router, not the registry, turns a failing handler into an error reply."""
    hooks = Hooks()

    async def broken(*_args: Any) -> None:
        raise RuntimeError("boom")

    hooks.add("event", broken)
    with pytest.raises(RuntimeError, match="boom"):
        await hooks.fire("event")
