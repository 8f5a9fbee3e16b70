"""Background tasks (background.py): kept until they end, failures logged, waited for or
cancelled as a whole."""

from __future__ import annotations

import asyncio
import logging

import pytest

from schnack.server.background import Background

log = logging.getLogger(__name__)


async def test_wait_waits_for_tasks_started_while_it_waits() -> None:
    tasks = Background(log, "failed")
    release, second_started = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    async def second() -> None:
        second_started.set()
        await release.wait()
        done.append("second")

    async def first() -> None:
        tasks.spawn(second())
        done.append("first")

    tasks.spawn(first())
    waiting = asyncio.create_task(tasks.wait())
    await second_started.wait()
    assert done == ["first"] and not waiting.done()
    release.set()
    await waiting
    assert done == ["first", "second"]


async def test_a_failure_is_logged_and_not_raised_by_wait(caplog: pytest.LogCaptureFixture) -> None:
    tasks = Background(log, "sending the thing failed")

    async def fail() -> None:
        raise ValueError("broken")

    async def succeed() -> int:
        return 1

    tasks.spawn(fail())
    succeeded = tasks.spawn(succeed())
    with caplog.at_level(logging.ERROR, logger=__name__):
        await tasks.wait()
    assert succeeded.result() == 1
    [record] = [r for r in caplog.records if r.name == __name__]
    assert record.getMessage() == "sending the thing failed"
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)


async def test_stop_cancels_tasks_and_those_they_start(caplog: pytest.LogCaptureFixture) -> None:
    tasks = Background(log, "failed")
    started = asyncio.Event()
    cancelled: list[str] = []

    async def late() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append("late")
            raise

    async def waiting() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append("waiting")
            tasks.spawn(late())
            raise

    tasks.spawn(waiting())
    await started.wait()
    with caplog.at_level(logging.ERROR, logger=__name__):
        await tasks.stop()
    assert cancelled == ["waiting", "late"] and len(tasks) == 0
    assert not [r for r in caplog.records if r.name == __name__], "a cancelled task is no failure"


async def test_cancel_cancels_every_task_and_wait_sees_them_end() -> None:
    tasks = Background(log, "failed")
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    running = [tasks.spawn(forever()), tasks.spawn(forever())]
    await started.wait()
    tasks.cancel()
    await tasks.wait()
    assert all(task.cancelled() for task in running)
