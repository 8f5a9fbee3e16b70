"""A real ``schnack serve`` process killed and started again: nothing it confirmed is lost.

Runs on both storage backends. The server is killed with SIGKILL (no clean shutdown) right
after it answered a ping that followed the messages, so everything before the ping had been
routed and stored; after the restart the offline user gets every message once, in order, and
rosters and waiting subscription requests are still there.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..server.storage.conftest import storage_url
from .test_messages import FALLBACK, PASSWORD, Peer

__all__ = ["storage_url"]

SCHNACK = [sys.executable, "-m", "schnack.cli"]
MESSAGES = 30


class Process:
    """``schnack serve`` on ephemeral ports; ``bound`` as Peer expects it from a Server."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.bound: dict[str, list[tuple[str, int]]] = {}
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*SCHNACK, "serve", "--config", str(self.config)], stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stderr is not None
        seen = ""
        while "add a user" not in seen:
            line = self.proc.stderr.readline()
            assert line, f"the server exited: {seen}"
            seen += line
        match = re.search(r"port (\d+) \(STARTTLS\)", seen)
        assert match, seen
        self.bound = {"c2s": [("127.0.0.1", int(match.group(1)))]}

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


def admin(config: Path, *args: str, stdin: str | None = None) -> None:
    result = subprocess.run([*SCHNACK, "admin", *args, "--config", str(config)], input=stdin,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def served_config(tmp_path: Path, storage_url: str) -> Path:
    """A configuration on ``storage_url`` (loopback STARTTLS port only) with alice and bob."""
    config = tmp_path / "schnack.toml"
    config.write_text(
        'domains = ["localhost"]\ndata_dir = "state"\n'
        '[listen]\nc2s = ["127.0.0.1:0"]\nc2s_tls = []\nhttp = []\nhttps = []\n'
        f'[storage]\nurl = "{storage_url}"\n'
    )
    for user in ("alice", "bob"):
        admin(config, "user", "add", "--password-stdin", f"{user}@localhost", stdin=f"{PASSWORD}\n")
    return config


@pytest.fixture
def server(tmp_path: Path, storage_url: str) -> Iterator[Process]:
    process = Process(served_config(tmp_path, storage_url))
    try:
        yield process
    finally:
        process.stop()


async def test_killed_server_keeps_what_it_confirmed(server: Process) -> None:
    server.start()
    alice = Peer(server, "alice@localhost/phone")  # type: ignore[arg-type]
    await alice.start()
    await alice.available()
    alice.xmpp.send_presence(pto="bob@localhost", ptype="subscribe")
    for i in range(MESSAGES):
        alice.send("bob@localhost", FALLBACK, encrypted=True, id=f"m{i}")
    await alice.sync()
    server.kill()
    await alice.stop()

    server.start()
    bob = Peer(server, "bob@localhost/laptop")  # type: ignore[arg-type]
    requests: asyncio.Queue[Any] = asyncio.Queue()
    bob.xmpp.add_event_handler("presence_subscribe", requests.put_nowait)
    try:
        await bob.start()
        await bob.available()
        got = [await bob.next_message() for _ in range(MESSAGES)]
        assert [m["id"] for m in got] == [f"m{i}" for i in range(MESSAGES)]
        assert all(m["from"] == "alice@localhost/phone" and m["delay"]["stamp"] is not None for m in got)
        async with asyncio.timeout(30):
            request = await requests.get()
        assert request["from"] == "alice@localhost"
        await bob.sync()
        assert bob.messages.empty()
    finally:
        await bob.stop()

    alice = Peer(server, "alice@localhost/phone")  # type: ignore[arg-type]
    try:
        await alice.start()
        roster = await alice.xmpp.get_roster()
        assert roster is not None
        item = roster["roster"]["items"]["bob@localhost"]
        # slixmpp approves requests by default: Bob's answer to the request kept across the
        # restart completed Alice's subscription.
        assert (item["subscription"], item["ask"]) == ("to", "")
    finally:
        await alice.stop()
