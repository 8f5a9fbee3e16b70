"""Calls in ``schnack chat``, driven by Textual's pilot against the real server: alice's client
runs inside the app, bob's is driven by the test and calls or answers for real (audio over
aiortc on loopback). A call rings in the call line and is answered with Ctrl+Y, shows its
duration, profile, verification and bytes, switches the data saver with Ctrl+S (bob's encoder
follows), and hangs up with Ctrl+R; ``/call`` calls the open conversation's contact; a call is
rejected with Ctrl+R; the call is stored in calls.jsonl with its verification."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from textual.pilot import Pilot

from schnack.cli.chat.app import ChatApp
from schnack.cli.chat.calling import CallBar
from schnack.client import Client
from schnack.client.calls.calls import Call, IncomingCall
from schnack.client.calls.media import DATA_SAVER, NORMAL, EncoderSettings
from schnack.server.app import Server
from schnack.xmpp.jid import JID

from ...harness import add_user, running

PASSWORD = "correct horse battery staple"
BOB = JID.parse("bob@localhost")
WAIT = 60
SIZE = (160, 40)
# What bob's encoder does once alice asks for the data saver (its DTX keepalive stays its own).
SAVER = replace(EncoderSettings.negotiate(DATA_SAVER, None), keepalive=NORMAL.keepalive)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(tmp_path, listen=True) as srv:
        for user in ("alice", "bob"):
            await add_user(srv, user, PASSWORD)
        yield srv


async def online(server: Server, clients: list[Client], jid: str, data_dir: Path | None = None) -> Client:
    host, port = server.bound["c2s"][0]
    client = Client(jid, PASSWORD, host=host, port=port, direct_tls=False, verify=False, data_dir=data_dir)
    await client.connect()
    clients.append(client)
    return client


async def until(pilot: Pilot[None], check: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while not check():
                await pilot.pause(0.05)
    except TimeoutError:
        raise AssertionError(f"still not: {what}") from None


def line(app: ChatApp) -> str:
    bar = app.query_one(CallBar)
    return str(bar.content) if bar.has_class("shown") else ""


async def rings(client: Client) -> IncomingCall:
    async with asyncio.timeout(WAIT):
        async for incoming in client.incoming_calls():
            return incoming
    raise AssertionError("no call rang")


async def test_answer_switch_the_data_saver_and_hang_up(server: Server, clients: list[Client], tmp_path: Path) -> None:
    alice = await online(server, clients, "alice@localhost/laptop", tmp_path / "alice")
    bob = await online(server, clients, "bob@localhost/phone")
    app = ChatApp(alice, peer=BOB)
    async with app.run_test(size=SIZE) as pilot:
        call = await bob.call("alice@localhost")
        await until(pilot, lambda: line(app) == "📞 bob@localhost/phone is calling · Ctrl+Y answer · Ctrl+R reject",
                    "the call rings in the call line")
        assert app.query_one(CallBar).has_class("ringing")
        await pilot.press("ctrl+y")
        await call.wait_connected(WAIT)
        await until(pilot, lambda: "kB" in line(app), "the line shows the call under way")
        shown = line(app)
        assert shown.startswith("📞 bob@localhost/phone · 00:0") and " · normal · unverified · ↑ " in shown, shown
        # Both clients use OMEMO: the fingerprints came encrypted, by keys trusted only blindly.
        answered = app.query_one(CallBar).call
        assert answered is not None and answered.verification.device is not None

        await pilot.press("ctrl+s")
        await until(pilot, lambda: " · data saver · " in line(app), "the line shows the data saver")
        await until(pilot, lambda: call.media is not None and call.media.track.settings == SAVER,
                    "bob's encoder follows the data saver")

        await pilot.press("ctrl+r")
        async with asyncio.timeout(WAIT):
            ended = await call.ended
        assert ended.reason.condition == "success" and ended.by_peer
        await until(pilot, lambda: "ended after" in line(app), "the line says the call ended")
        assert line(app).startswith("📞 call with bob@localhost/phone ended after 00:0")
        assert "(unverified): the call ended" in line(app)
    (record,) = [json.loads(text) for text in (tmp_path / "alice" / "calls.jsonl").read_text().splitlines()]
    assert record["direction"] == "in" and record["peer"] == "bob@localhost/phone"
    assert record["verified"] == "unverified" and isinstance(record["omemo_device"], int)
    assert record["data_saver"] is True and record["duration"] > 0


async def test_call_from_the_conversation_and_the_peer_hangs_up(server: Server, clients: list[Client]) -> None:
    alice = await online(server, clients, "alice@localhost/laptop")
    bob = await online(server, clients, "bob@localhost/phone")
    ringing = asyncio.ensure_future(rings(bob))
    app = ChatApp(alice, peer=BOB)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*"/call")
        await pilot.press("enter")
        incoming = await ringing
        assert incoming.caller == JID.parse("alice@localhost/laptop")
        await until(pilot, lambda: line(app) == "📞 calling bob@localhost… · Ctrl+R hang up", "the line says calling")
        taken: Call = await incoming.answer()
        await taken.wait_connected(WAIT)
        await until(pilot, lambda: line(app).startswith("📞 bob@localhost/phone · "), "the call is under way")
        await taken.hangup()
        await until(pilot, lambda: "ended after" in line(app), "the line says the call ended")
        assert line(app).endswith(": the call ended")


async def test_reject(server: Server, clients: list[Client]) -> None:
    alice = await online(server, clients, "alice@localhost/laptop")
    bob = await online(server, clients, "bob@localhost/phone")
    app = ChatApp(alice, peer=BOB)
    async with app.run_test(size=SIZE) as pilot:
        call = await bob.call("alice@localhost")
        await until(pilot, lambda: "is calling" in line(app), "the call rings")
        await pilot.press("ctrl+r")
        async with asyncio.timeout(WAIT):
            ended = await call.ended
        assert ended.reason.condition == "decline"
        await until(pilot, lambda: line(app) == "", "the call line is gone")


async def test_missed_calls_show_in_the_line_and_go_into_the_history(
    server: Server, clients: list[Client], tmp_path: Path
) -> None:
    """A call bob gave up while alice was offline shows as missed once she is back; one that
    rings in the chat and that bob gives up says so; both are in calls.jsonl, once each."""
    bob = await online(server, clients, "bob@localhost/phone")
    while_away = await bob.call("alice@localhost", ring_timeout=1.0)
    async with asyncio.timeout(WAIT):
        assert (await while_away.ended).reason.condition == "timeout"
    alice = await online(server, clients, "alice@localhost/laptop", tmp_path / "alice")
    history = tmp_path / "alice" / "calls.jsonl"

    def recorded() -> list[dict[str, object]]:
        return [json.loads(text) for text in history.read_text().splitlines()] if history.exists() else []

    app = ChatApp(alice, peer=BOB)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: line(app).startswith("📞 missed call from bob@localhost at "), "the missed call shows")
        assert line(app).endswith(" (nobody answered)")
        call = await bob.call("alice@localhost")
        await until(pilot, lambda: "is calling" in line(app), "the call rings")
        await call.hangup()
        await until(pilot, lambda: line(app) == "📞 call with bob@localhost/phone: the caller hung up", "the caller hung up")
        await until(pilot, lambda: len(recorded()) == 2, "both calls are recorded")
    assert [(r["id"], r["missed"]) for r in recorded()] == [(while_away.sid, "unanswered"), (call.sid, "cancelled")]
    assert all(r["ending"] == "missed" and r["direction"] == "in" and r["duration"] == 0 for r in recorded())
