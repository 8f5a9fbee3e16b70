"""``schnack calls``: the call history from ``calls.jsonl`` with the data used per contact, and the
account's data saver setting, as real processes. The history is written by the same ``store``
function ``schnack call``, ``schnack answer`` and ``schnack chat`` use after a call (a real call's
record is checked in test_calls.py), for calls made of the client's real call objects."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from schnack.cli.calls import store, store_missed
from schnack.client import Client
from schnack.client.calls.calls import UNANSWERED, Call, Calls, MediaOptions, MissedCall
from schnack.client.calls.media import CallStats
from schnack.client.calls.session import CallSession, Ended
from schnack.client.metered import SaverChoice
from schnack.client.store import account_dir
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads.jingle import Reason
from schnack.xmpp.payloads.jingle_rtp import RtpDescription
from schnack.xmpp.payloads.jmi import JingleMessage

from .proc import client_env, schnack

ALICE = JID.parse("alice@example.org")


def finished_call(calls: Calls, peer: str, *, outgoing: bool, data_saver: bool, condition: str) -> Call:
    """A call with ``peer`` (a full JID) that has ended with ``condition``."""
    if outgoing:
        session, _ = CallSession.outgoing("s1", JID.parse("alice@example.org/laptop"), JID.parse(peer), 0.0)
    else:
        propose = JingleMessage("propose", "s2", (RtpDescription("audio"),))
        session, _ = CallSession.incoming(JID.parse("alice@example.org/laptop"), JID.parse(peer), propose, 0.0)
    call = Call(calls, session)
    call.options = MediaOptions(data_saver=data_saver)
    call.ended.set_result(Ended(Reason(condition), by_peer=True))
    return call


async def test_history_and_data_per_contact(tmp_path: Path) -> None:
    env = client_env(tmp_path)
    directory = account_dir(ALICE, tmp_path / "client")
    client = Client(ALICE, "secret", data_dir=directory)  # the account's store, as `schnack login` leaves it
    calls = Calls(client)
    made = [
        (finished_call(calls, "bob@example.org/phone", outgoing=True, data_saver=False, condition="success"),
         CallStats(duration=125.0, bytes_sent=420_000, bytes_received=410_000), SaverChoice(False, "link eth0 is not metered")),
        (finished_call(calls, "carol@example.org/tablet", outgoing=False, data_saver=True, condition="success"),
         CallStats(duration=60.0, bytes_sent=61_000, bytes_received=59_000), SaverChoice(True, "metered link wwan0")),
        (finished_call(calls, "bob@example.org/laptop", outgoing=False, data_saver=False, condition="cancel"),
         CallStats(duration=30.5, bytes_sent=100_000, bytes_received=110_000), SaverChoice(False, "the setting is off")),
    ]  # fmt: skip
    for call, stats, saver in made:
        store(directory, call, stats, saver)
    client.store.close()

    listed = await schnack(env, "calls", "-a", str(ALICE))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 7, listed.stdout
    assert lines[0].endswith("→ bob@example.org  2:05  ↑ 420.0 kB ↓ 410.0 kB  normal, unverified  (the call ended)")
    assert lines[1].endswith("← carol@example.org  1:00  ↑ 61.0 kB ↓ 59.0 kB  data saver, unverified  (the call ended)")
    assert lines[2].endswith("← bob@example.org  30.5 s  ↑ 100.0 kB ↓ 110.0 kB  normal, unverified  (the caller hung up)")
    assert lines[3:] == [
        "",
        "data used per contact:",
        "  bob@example.org: 2 calls, 2:36, 1040.0 kB (↑ 520.0 kB ↓ 520.0 kB)",
        "  carol@example.org: 1 call, 1:00, 120.0 kB (↑ 61.0 kB ↓ 59.0 kB)",
    ]

    as_json = await schnack(env, "calls", "-a", str(ALICE), "--json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert [c["peer"] for c in report["calls"]] == ["bob@example.org", "carol@example.org/tablet", "bob@example.org/laptop"]
    assert report["calls"][1]["data_saver_reason"] == "metered link wwan0"
    assert report["calls"][0]["direction"] == "out" and report["calls"][0]["ending"] == "the call ended"
    assert report["contacts"] == [
        {"contact": "bob@example.org", "calls": 2, "duration": 155.5, "bytes_sent": 520_000, "bytes_received": 520_000,
         "bytes": 1_040_000, "data_saver_calls": 0},
        {"contact": "carol@example.org", "calls": 1, "duration": 60.0, "bytes_sent": 61_000, "bytes_received": 59_000,
         "bytes": 120_000, "data_saver_calls": 1},
    ]  # fmt: skip

    # A damaged line is skipped with a note; the other calls are still listed.
    with (directory / "calls.jsonl").open("a", encoding="utf-8") as out:
        out.write('{"peer": "dave@example.org"}\nnot json\n')
    damaged = await schnack(env, "calls", "-a", str(ALICE))
    assert damaged.returncode == 0, damaged.stderr
    assert damaged.stderr.splitlines() == [
        f"schnack: {directory / 'calls.jsonl'}:4: skipped, not a call record (no 'ended')",
        f"schnack: {directory / 'calls.jsonl'}:5: skipped, not a call record (not JSON: Expecting value)",
    ]
    assert damaged.stdout == listed.stdout


async def test_missed_calls_among_the_others(tmp_path: Path) -> None:
    """A missed call is listed as one, at the time it was placed, once however often it is
    told; it used no data, so only the answered call counts per contact. A line written before
    missed calls were recorded still reads."""
    env = client_env(tmp_path)
    directory = account_dir(ALICE, tmp_path / "client")
    client = Client(ALICE, "secret", data_dir=directory)
    calls = Calls(client)
    answered = finished_call(calls, "bob@example.org/phone", outgoing=False, data_saver=False, condition="success")
    store(directory, answered, CallStats(duration=60.0, bytes_sent=1000, bytes_received=2000))
    placed = datetime(2026, 12, 3, 9, 40, tzinfo=UTC)
    for _ in range(2):
        store_missed(directory, MissedCall(JID.parse("carol@example.org/tablet"), "c1", placed, UNANSWERED))
    client.store.close()
    with (directory / "calls.jsonl").open("a", encoding="utf-8") as out:  # as an older schnack wrote it
        out.write(json.dumps({"ended": "2026-12-03T10:00:00+00:00", "peer": "bob@example.org/phone", "direction": "out",
                              "duration": 5.0, "bytes_sent": 10, "bytes_received": 20}) + "\n")  # fmt: skip

    listed = await schnack(env, "calls", "-a", str(ALICE))
    assert listed.returncode == 0 and not listed.stderr, listed.stderr
    lines = listed.stdout.splitlines()
    # Oldest first, not in the order they were added.
    assert lines[0] == f"{placed.astimezone():%Y-%m-%d %H:%M} ← carol@example.org  missed call (nobody answered)"
    assert lines[1].endswith("→ bob@example.org  5.0 s  ↑ 0.0 kB ↓ 0.0 kB  normal, unverified"), lines
    assert "← bob@example.org  1:00" in lines[2], lines
    assert lines[3:] == ["", "data used per contact:", "  bob@example.org: 2 calls, 1:05, 3.0 kB (↑ 1.0 kB ↓ 2.0 kB)"]
    report = json.loads((await schnack(env, "calls", "-a", str(ALICE), "--json")).stdout)
    assert report["calls"][0] == {"ended": "2026-12-03T09:40:00+00:00", "peer": "carol@example.org", "direction": "in",
                                  "duration": 0, "bytes_sent": 0, "bytes_received": 0, "ending": "missed",
                                  "missed": "unanswered", "id": "c1"}  # fmt: skip
    assert [c["contact"] for c in report["contacts"]] == ["bob@example.org"]


async def test_no_calls_and_no_account(tmp_path: Path) -> None:
    env = client_env(tmp_path)
    Client(ALICE, "secret", data_dir=account_dir(ALICE, tmp_path / "client")).store.close()
    empty = await schnack(env, "calls")
    assert (empty.returncode, empty.stdout) == (0, "no calls yet\n")
    assert json.loads((await schnack(env, "calls", "--json")).stdout) == {"calls": [], "contacts": []}
    nobody = await schnack(env, "calls", "-a", "nobody@example.org")
    assert nobody.returncode == 1
    assert nobody.stderr.strip() == "schnack: no such account stored: nobody@example.org; log in first with: schnack login nobody@example.org"


async def test_data_saver_setting(tmp_path: Path) -> None:
    env = client_env(tmp_path)
    Client(ALICE, "secret", data_dir=account_dir(ALICE, tmp_path / "client")).store.close()
    shown = await schnack(env, "calls", "data-saver")
    assert shown.stdout == "data saver: auto (on for calls over a metered link)\n"
    changed = await schnack(env, "calls", "data-saver", "on", "-a", str(ALICE))
    assert (changed.returncode, changed.stdout) == (0, "data saver: on (on for every call)\n")
    # The group's --account reaches the subcommand too.
    assert (await schnack(env, "calls", "-a", str(ALICE), "data-saver")).stdout == "data saver: on (on for every call)\n"
    assert (await schnack(env, "calls", "data-saver", "off")).stdout == "data saver: off (off)\n"
    bad = await schnack(env, "calls", "data-saver", "sometimes")
    assert bad.returncode == 2 and "'sometimes' is not one of 'auto', 'on', 'off'" in bad.stderr
