"""What the chat app writes: times, check marks, conversation rows, the encryption summary and
the key change warning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schnack.cli.chat import lines
from schnack.client.omemo import Device, KeysChanged, Trust
from schnack.client.store import Conversation, StoredMessage
from schnack.xmpp.jid import JID

BOB = JID.parse("bob@example.org")
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def sent(state: str, **extra: object) -> StoredMessage:
    return StoredMessage(BOB, "out", "hello", NOW, state, encrypted=True, **extra)  # type: ignore[arg-type]


def device(id: int, trust: Trust) -> Device:
    return Device(BOB, id, " ".join([f"{id:08x}"] * 8), trust)


def test_check_marks_follow_the_state() -> None:
    shown = {state: str(lines.message_line(sent(state), NOW)).split("hello", 1)[1]
             for state in ("pending", "sent", "acked", "delivered", "read")}
    assert shown == {"pending": "  ◷", "sent": "  ◷", "acked": "  ✓", "delivered": "  ✓✓", "read": "  ✓✓ read"}
    failed = sent("failed", error="policy-violation", error_text="encrypt it")
    assert str(lines.message_line(failed, NOW)).endswith("hello  ✗ not sent: policy-violation (encrypt it)")


def test_message_lines_say_who_when_and_what_else() -> None:
    local = NOW.astimezone()
    theirs = StoredMessage(BOB, "in", "hi [b]there[/b]", NOW - timedelta(days=2), "delivered",
                           edited=NOW)
    earlier = (NOW - timedelta(days=2)).astimezone().strftime("%Y-%m-%d %H:%M")
    assert str(lines.message_line(theirs, NOW)) == (
        f"{earlier} bob@example.org: hi [b]there[/b] (edited) [unencrypted]")
    assert str(lines.message_line(sent("acked"), NOW)) == f"{local:%H:%M} me: hello  ✓"


def test_conversation_rows_show_unread_counts_and_key_changes() -> None:
    talk = Conversation(BOB, NOW, "a long message " * 5, "out", 3)
    row = str(lines.conversation_row(talk, NOW, keys_changed=True)).split("\n")
    assert row[0] == f"bob@example.org  {NOW.astimezone():%H:%M}  (3 unread)  ⚠ keys changed"
    assert row[1] == "  me: a long message a long message a long…"
    assert str(lines.contact_row("carol@example.org")) == "carol@example.org\n  no messages yet"


def test_the_encryption_summary_follows_trust() -> None:
    assert lines.encryption_summary([device(1, Trust.UNDECIDED)]) == "🔒 encrypted (OMEMO, 1 device, not verified yet)"
    assert lines.encryption_summary([device(1, Trust.VERIFIED), device(2, Trust.VERIFIED)]) == \
        "🔒 encrypted (OMEMO, 2 devices, verified)"
    assert lines.encryption_summary([device(1, Trust.VERIFIED), device(2, Trust.UNDECIDED)]) == \
        "🔒 encrypted (OMEMO, 2 devices, new keys wait for your decision)"
    assert lines.encryption_summary([device(1, Trust.VERIFIED), device(2, Trust.BLIND)]) == \
        "🔒 encrypted (OMEMO, 2 devices, partly verified)"
    # Without blind trust a new key waits even before anything is verified.
    assert lines.encryption_summary([device(1, Trust.UNDECIDED)], blind_trust=False).endswith(
        "new keys wait for your decision)")


def test_the_key_change_banner_points_to_verify() -> None:
    change = KeysChanged(BOB, added=(device(7, Trust.UNDECIDED),), removed=(device(3, Trust.BLIND),))
    assert lines.key_change_banner(change) == (
        "⚠ The OMEMO keys of bob@example.org changed: new device 7 (" + " ".join(["00000007"] * 8) + "); "
        "device 3 removed. If nobody told you of a new device, compare the fingerprints: "
        "schnack verify bob@example.org   (Ctrl+O hides this)")
    assert lines.refusal("x has no OMEMO devices; pass encrypted=False to send unencrypted") == (
        "x has no OMEMO devices; press Ctrl+T to send unencrypted (the servers can then read it)")


def test_call_lines() -> None:
    assert lines.call_ringing("bob@example.org/phone") == "📞 bob@example.org/phone is calling · Ctrl+Y answer · Ctrl+R reject"
    assert lines.call_status("bob@example.org", connected=False, duration=0, data_saver=False, verification="unverified",
                             sent=0, received=0) == "📞 calling bob@example.org… · Ctrl+R hang up"  # fmt: skip
    assert lines.call_status("bob@example.org/phone", connected=True, duration=83.4, data_saver=True,
                             verification="verified", sent=12345, received=67890) == (
        "📞 bob@example.org/phone · 01:23 · data saver · verified · ↑ 12.3 kB ↓ 67.9 kB · Ctrl+S data saver · Ctrl+R hang up")
    assert lines.call_duration(3725) == "1:02:05"
    assert lines.call_ended("bob@example.org", "nobody answered", 0.0, "") == "📞 call with bob@example.org: nobody answered"
    assert lines.call_ended("bob@example.org/phone", "the call ended", 61, "verified") == (
        "📞 call with bob@example.org/phone ended after 01:01 (verified): the call ended")
