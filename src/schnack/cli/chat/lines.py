"""What the chat app writes: message lines with their times and check marks, conversation rows,
the encryption summary of a conversation and the key change warning. Text only, no widgets.

The check marks are those of the messengers people know: a clock while the message waits to
reach the server, ✓ once the server has it (XEP-0198), ✓✓ once a device of the contact has it
(XEP-0184 or XEP-0333 received), ✓✓ in blue with "read" once the contact displayed it
(XEP-0333 displayed); ✗ with the server's reason when it was refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich.text import Text

from ...client.features.groups import Group
from ...client.omemo import Device, KeysChanged, Trust
from ...client.omemo.fingerprints import effective_trust
from ...client.store import Conversation, StoredMessage

MARKS: dict[str, tuple[str, str]] = {
    "pending": ("◷", "dim"),
    "sent": ("◷", "dim"),
    "acked": ("✓", "green"),
    "delivered": ("✓✓", "green"),
    "read": ("✓✓ read", "bold blue"),
}
UNENCRYPTED_HINT = "pass encrypted=False to send unencrypted"
TOGGLE_HINT = "press Ctrl+T to send unencrypted (the servers can then read it)"


def when(stamp: datetime, now: datetime) -> str:
    """A message's time in local time: the hour today, the date too on other days."""
    local, today = stamp.astimezone(), now.astimezone()
    return local.strftime("%H:%M" if local.date() == today.date() else "%Y-%m-%d %H:%M")


def mark(message: StoredMessage) -> tuple[str, str]:
    """The check mark of a message we sent, and its style."""
    if message.state == "failed":
        reason = message.error or "refused"
        return (f"✗ not sent: {reason}" + (f" ({message.error_text})" if message.error_text else ""), "bold red")
    return MARKS.get(message.state, ("?", "dim"))


def message_line(message: StoredMessage, now: datetime) -> Text:
    """One message of the conversation pane."""
    line = Text.assemble((when(message.stamp, now), "dim"), " ")
    if message.direction == "out":
        line.append("me", "bold cyan")
    else:
        # In a group, the writer: their nickname there, else their address.
        who = message.nick or (str(message.sender) if message.sender is not None else str(message.peer.bare))
        line.append(who, "bold magenta")
    line.append(": ")
    line.append(message.text)
    if message.edited is not None:
        line.append(" (edited)", "italic dim")
    if not message.encrypted:
        line.append(" [unencrypted]", "yellow")
    if message.direction == "out":
        symbol, style = mark(message)
        line.append("  ")
        line.append(symbol, style)
    return line


def undecryptable_line(sender: str, reason: str, stamp: datetime, now: datetime) -> Text:
    """A message that arrived but could not be decrypted (it is not stored)."""
    return Text.assemble((when(stamp, now), "dim"), " ", (sender, "bold magenta"), ": ",
                         (f"[could not decrypt: {reason}]", "bold red"))


def _group_label(group: Group) -> str:
    return f"👥 {group.name} ({group.jid})" if group.name else f"👥 {group.jid}"


def conversation_row(conversation: Conversation, now: datetime, *, keys_changed: bool = False,
                     group: Group | None = None) -> Text:
    """A row of the conversation list: who (a group is marked 👥), when, the last message, how
    many are unread."""
    row = Text(_group_label(group) if group is not None else str(conversation.peer),
               "bold" if conversation.unread else "")
    row.append(f"  {when(conversation.last, now)}", "dim")
    if conversation.unread:
        row.append(f"  ({conversation.unread} unread)", "bold yellow")
    if keys_changed:
        row.append("  ⚠ keys changed", "bold red")
    preview = ("me: " if conversation.direction == "out" else "") + " ".join(conversation.text.split())
    row.append("\n  " + (preview[:40] + "…" if len(preview) > 41 else preview), "dim")
    return row


def contact_row(peer: str, *, keys_changed: bool = False, group: Group | None = None) -> Text:
    """A row for a contact, or a group, with no messages yet."""
    row = Text(_group_label(group) if group is not None else peer)
    if keys_changed:
        row.append("  ⚠ keys changed", "bold red")
    row.append("\n  no messages yet", "dim")
    return row


def encryption_summary(devices: Sequence[Device], *, blind_trust: bool = True) -> str:
    """How a conversation is encrypted, from the contact's active devices (XEP-0384 trust)."""
    count = f"{len(devices)} device{'s' if len(devices) != 1 else ''}"
    trust = {effective_trust(device, devices, blind_trust=blind_trust) for device in devices}
    if Trust.UNDECIDED in trust:
        detail = "new keys wait for your decision"
    elif trust == {Trust.VERIFIED}:
        detail = "verified"
    elif Trust.VERIFIED in trust:
        detail = "partly verified"
    elif trust == {Trust.DISTRUSTED}:
        detail = "every key distrusted"
    else:
        detail = "not verified yet"
    return f"🔒 encrypted (OMEMO, {count}, {detail})"


def refusal(text: str) -> str:
    """An encryption error's sentence with this app's way to send unencrypted."""
    return text.replace(UNENCRYPTED_HINT, TOGGLE_HINT)


def key_change_banner(change: KeysChanged) -> str:
    """The warning shown when a contact's (or our own account's) OMEMO keys changed."""
    parts = [f"new device {d.id} ({d.fingerprint})" for d in change.added]
    parts += [f"device {d.id} removed" for d in change.removed]
    return (f"⚠ The OMEMO keys of {change.jid} changed: {'; '.join(parts)}. If nobody told you of a new "
            f"device, compare the fingerprints: schnack verify {change.jid}   (Ctrl+O hides this)")


def call_ringing(caller: str) -> str:
    """The banner of a call ringing here (XEP-0353 propose)."""
    return f"📞 {caller} is calling · Ctrl+Y answer · Ctrl+R reject"


def call_duration(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{rest:02d}" if minutes >= 60 else f"{minutes:02d}:{rest:02d}"


def call_status(peer: str, *, connected: bool, duration: float, data_saver: bool, verification: str,
                sent: int, received: int) -> str:
    """The line of the call under way: with whom, how long, the profile, verified or not, bytes
    both ways (with their headers), and the keys."""
    if not connected:
        return f"📞 calling {peer}… · Ctrl+R hang up"
    profile = "data saver" if data_saver else "normal"
    return (f"📞 {peer} · {call_duration(duration)} · {profile} · {verification} · "
            f"↑ {sent / 1000:.1f} kB ↓ {received / 1000:.1f} kB · Ctrl+S data saver · Ctrl+R hang up")


def missed_call(peer: str, placed: datetime, why: str) -> str:
    """The line of a call missed while the account was offline: who called, when, and why."""
    return f"📞 missed call from {peer} at {placed.astimezone():%Y-%m-%d %H:%M} ({why})"


def call_ended(peer: str, why: str, duration: float, verification: str) -> str:
    """The line left after a call: how it ended, how long it lasted, whether it was verified."""
    if duration <= 0:
        return f"📞 call with {peer}: {why}"
    return f"📞 call with {peer} ended after {call_duration(duration)} ({verification}): {why}"
