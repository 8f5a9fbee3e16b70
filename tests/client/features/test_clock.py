"""XEP-0202 in the client: a device whose clock is off stamps messages by the server's clock.

The skewed device is a real ``schnack`` process run under libfaketime, a day behind; the server
and the other account keep the machine's time.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from schnack.client import Client
from schnack.client.features.clock import TOLERANCE
from schnack.client.store import Store, account_dir
from schnack.server.app import Server
from schnack.xmpp.jid import JID

from ...cli.proc import client_env, line_of, login, schnack, start, stop
from ...conftest import require_service
from ...harness import add_user, running
from ..conftest import PASSWORD, WAIT, make_client, online

# Debian installs it under the machine's multiarch directory.
FAKETIME = next(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"), None)
BOB = JID.parse("bob@localhost")


async def offset_of(directory: Path) -> str | None:
    """The offset the account's store keeps, once it keeps one (its process measures it after login)."""
    async with asyncio.timeout(WAIT):
        while True:
            store = Store(directory)
            try:
                kept = store.setting("clock_offset")
            finally:
                store.close()
            if kept is not None:
                return kept
            await asyncio.sleep(0.1)


async def next_message(listener: asyncio.subprocess.Process) -> dict[str, Any]:
    """The next message ``schnack listen --json`` prints (receipts and chat states are skipped)."""
    while True:
        event: dict[str, Any] = json.loads(await line_of(listener.stdout))
        if event["event"] == "message":
            return event


async def test_a_right_clock_is_left_alone(chat_server: Server, clients: list[Client]) -> None:
    alice = await online(chat_server, clients, "alice@localhost/phone")
    assert await alice._clock.measure() == timedelta()
    assert abs(alice.store.now() - datetime.now(UTC)) < TOLERANCE


async def test_without_entity_time_the_known_offset_stays(tmp_path: Path) -> None:
    """A server that does not tell its time (XEP-0202 is optional) logs the client in as ever."""
    async with running(tmp_path, listen=True, modules={"disable": ["time"], "e2e": {"policy": "optional"}}) as server:
        for user in ("alice", "bob"):
            await add_user(server, user, PASSWORD)
        store = Store(tmp_path / "alice")
        store.set_clock_offset(timedelta(seconds=30))
        store.close()
        client = make_client(server, "alice@localhost/phone", data_dir=tmp_path / "alice")
        async with client:
            await client.send(BOB, "hello", encrypted=False)
            await client.acknowledged(next(iter(client.store.outbox())).origin_id)
            assert client._clock._task is not None
            await client._clock._task
            assert abs(client.store.now() - datetime.now(UTC) - timedelta(seconds=30)) < TOLERANCE
            (mine,) = client.store.history(BOB)
            assert abs(mine.stamp - datetime.now(UTC) - timedelta(seconds=30)) < timedelta(seconds=10)


async def test_a_device_a_day_behind_keeps_the_order(chat_server: Server, tmp_path: Path) -> None:
    require_service(FAKETIME is not None, "libfaketime is not installed (Debian package faketime)")
    env = client_env(tmp_path)
    for user in ("alice", "bob"):
        assert (await login(chat_server, env, f"{user}@localhost", PASSWORD)).returncode == 0
    behind = dict(env, LD_PRELOAD=str(FAKETIME), FAKETIME="-1d", FAKETIME_DONT_FAKE_MONOTONIC="1",
                  FAKETIME_NO_CACHE="1")
    # Waits offline, so it comes stamped by the server (XEP-0203).
    first = await schnack(env, "send", "--unencrypted", "-a", "alice@localhost", "bob@localhost", "first")
    assert first.returncode == 0, first.stderr
    listener = await start(behind, "listen", "--json", "--account", "bob@localhost")
    try:
        assert (await line_of(listener.stderr)).startswith("schnack: listening as bob@localhost/")
        assert (await next_message(listener))["text"] == "first"
        offset = float(await offset_of(account_dir(BOB, tmp_path / "client")) or 0)
        assert abs(offset - 86400) < 60
        second = await schnack(env, "send", "--unencrypted", "-a", "alice@localhost", "bob@localhost", "second")
        assert second.returncode == 0, second.stderr
        live = await next_message(listener)
        assert live["text"] == "second" and not live["delayed"]
        assert abs(datetime.fromisoformat(live["stamp"]) - datetime.now(UTC)) < timedelta(minutes=1)
    finally:
        assert await stop(listener) == 0
    history = await schnack(behind, "history", "alice@localhost", "-a", "bob@localhost", "--json")
    assert history.returncode == 0, history.stderr
    shown = [json.loads(line) for line in history.stdout.splitlines()]
    assert [message["text"] for message in shown] == ["first", "second"]
