"""The Textual app of ``schnack chat``: conversations, one conversation, a composer.

The app is given a connected :class:`~schnack.client.Client` and shows what its store holds
and what its feeds announce: messages as they arrive (stored before they are announced), the
check marks as receipts, chat markers and the server's acknowledgements come in, the contact's
typing, the connection coming and going, and every change of a contact's OMEMO keys as a loud
banner. Messages are sent encrypted (OMEMO); a conversation whose contact has no device to
encrypt to says so, and sends nothing until the user switches it to unencrypted (Ctrl+T),
which stays visible in the header. A conversation shown is marked read (XEP-0333), so the
contact's check marks turn to "read".

The account's groups (XEP-0045, see :mod:`schnack.client.features.groups`) are conversations
too, marked as groups in the list: each message shows who wrote it, what is typed goes to every
member encrypted (a refusal, such as a member without keys, is shown and the text stays in the
composer), and a group shown is marked read here only: the room gets no chat markers.

Calls (see :mod:`.calling`) ring in a line above the conversation: Ctrl+Y answers, Ctrl+R
rejects or hangs up, Ctrl+S switches the data saver during a call, and ``/call`` typed in a
conversation calls its contact.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from ...client import Client, Connected, EncryptionRequired, Message
from ...client.errors import ClientError
from ...client.features.groups import Group, GroupError, GroupMessage, Invited, KeyWarning, Removed
from ...client.omemo import KeysChanged, Trust
from ...client.store import StoredMessage, StoreError
from ...xmpp.jid import JID, JIDError
from . import lines
from .calling import CallBar

log = logging.getLogger(__name__)

# How much of a conversation is shown when it is opened.
HISTORY = 200
# How long a group we were added to may take to be entered before it is listed anyway.
ENTERING = 120.0


class MessageLine(Static):
    """One message in the conversation pane; ``stored`` is None for one that is not stored (a
    message that could not be decrypted)."""

    def __init__(self, content: Any, stored: StoredMessage | None = None, **kwargs: Any) -> None:
        super().__init__(content, markup=False, **kwargs)
        self.stored = stored


@dataclass
class Security:
    """What is known about encrypting to a contact: their active devices, or why not."""

    summary: str
    problem: str | None = None


class ChatApp(App[None]):
    """The chat app for one connected client; ``peer`` is the conversation opened first."""

    TITLE = "schnack"
    CSS = """
    #status { height: 1; background: $primary; color: $text; padding: 0 1; }
    #status.plain { background: $error; }
    #banner { display: none; background: $error; color: $text; padding: 0 1; text-style: bold; }
    #banner.shown { display: block; }
    #side { width: 38; border-right: solid $primary; }
    #conversations { height: 1fr; border: none; }
    #main { width: 1fr; }
    #messages { height: 1fr; padding: 0 1; }
    MessageLine.out { color: $text; }
    MessageLine.in { color: $text-muted; }
    #typing { height: 1; color: $text-muted; padding: 0 1; }
    #notice { display: none; color: $warning; padding: 0 1; }
    #notice.shown { display: block; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+n", "new_conversation", "New chat"),
        Binding("ctrl+t", "toggle_encryption", "Encryption on/off"),
        Binding("ctrl+o", "hide_banner", "Seen the key warning"),
        Binding("ctrl+y", "answer_call", "Answer"),
        Binding("ctrl+r", "end_call", "Reject/hang up"),
        Binding("ctrl+s", "toggle_saver", "Data saver"),
        Binding("ctrl+q", "quit", "Quit"),
    ]

    def __init__(self, client: Client, *, peer: JID | None = None) -> None:
        super().__init__()
        self.client = client
        self.peer: JID | None = None
        self._first = peer.bare if peer is not None else None
        self.connection = "connected" if client.connected else "connecting"
        # Conversations the user switched to unencrypted.
        self.plain: set[JID] = set()
        self.security: dict[JID, Security] = {}
        # Key changes not yet acknowledged with Ctrl+O, by account.
        self.key_changes: dict[JID, KeysChanged] = {}
        self._lines: dict[tuple[str, str], MessageLine] = {}
        self.call_bar = CallBar(client)

    def compose(self) -> ComposeResult:
        yield Static(id="status", markup=False)
        yield Static(id="banner", markup=False)
        yield self.call_bar
        with Horizontal():
            with Vertical(id="side"):
                yield Input(placeholder="Chat with (user@domain), Enter", id="to")
                yield OptionList(id="conversations")
            with Vertical(id="main"):
                yield VerticalScroll(id="messages")
                yield Static(id="typing", markup=False)
                yield Static(id="notice", markup=False)
                yield Input(placeholder="Choose a conversation", id="composer", disabled=True)
        yield Footer()

    async def on_mount(self) -> None:
        self._watch(self._messages())
        self._watch(self._receipts())
        self._watch(self._connection())
        self._watch(self._key_changes())
        self._watch(self._typing())
        self._watch(self._group_messages())
        self._watch(self._group_updates())
        self.refresh_conversations()
        self.refresh_status()
        if self._first is not None:
            await self.open_conversation(self._first)
        else:
            self.query_one("#to", Input).focus()

    # Background work -------------------------------------------------------------------------

    def _watch(self, work: Coroutine[Any, Any, None]) -> None:
        self.run_worker(self._guarded(work), exit_on_error=False)

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work``; what goes wrong is shown in the notice line, and the app goes on."""
        try:
            await work
        except Exception as err:
            self._failed(err)

    def _failed(self, err: Exception) -> None:
        if isinstance(err, ClientError | StoreError):
            self.show_notice(str(err))
        else:
            log.exception("the chat app failed", exc_info=err)
            self.show_notice(f"something went wrong: {type(err).__name__}: {err}")

    async def _messages(self) -> None:
        async for message in self.client.messages():
            # One message that cannot be shown does not stop the ones after it.
            try:
                await self._arrived(message)
            except Exception as err:
                self._failed(err)

    async def _arrived(self, message: Message) -> None:
        peer = message.peer
        if message.error is not None:
            if message.id is not None:
                self._refresh_line("out", peer, message.id)
            self.refresh_conversations()
            return
        if peer == self.peer:
            if message.text is None:
                self._append(MessageLine(lines.undecryptable_line(
                    str(message.sender.bare), message.undecryptable or "unknown reason",
                    message.stamp or datetime.now(UTC), datetime.now(UTC))))
            elif message.history:
                # From the archive catch-up: it may belong anywhere in the conversation.
                self._show_history()
            elif message.replaces is not None:
                self._refresh_line("out" if message.outgoing else "in", peer, message.replaces)
            else:
                stored = (self.client.store.message(peer, message.id, outgoing=message.outgoing)
                          if message.id is not None else None)
                if stored is None:
                    self._show_history()
                else:
                    self._append(self._line(stored))
            if not message.outgoing and message.id is not None and message.text is not None:
                await self._mark_read(peer, message.id)
        self.refresh_conversations()

    async def _group_messages(self) -> None:
        async for message in self.client.groups.messages():
            try:
                await self._group_arrived(message)
            except Exception as err:
                self._failed(err)

    async def _group_arrived(self, message: GroupMessage) -> None:
        group = message.group
        if group == self.peer:
            if message.text is None:
                self._append(MessageLine(lines.undecryptable_line(
                    message.nick or str(group), message.undecryptable or "unknown reason",
                    message.stamp or datetime.now(UTC), datetime.now(UTC))))
            else:
                stored = (self.client.store.message(group, message.id, outgoing=message.outgoing)
                          if message.id is not None and not message.history else None)
                if stored is None:
                    self._show_history()
                else:
                    self._append(self._line(stored))
                if message.id is not None and not message.outgoing:
                    await self._mark_read(group, message.id)
        self.refresh_conversations()

    async def _group_updates(self) -> None:
        async for update in self.client.groups.updates():
            if update.group == self.peer and isinstance(update, Removed):
                self.show_notice(f"You are no longer in the group {update.group}"
                                 + (f": {update.reason}" if update.reason else ""))
            elif update.group == self.peer and isinstance(update, KeyWarning):
                self.show_notice("⚠ " + "; ".join(f"{jid}: {why}" for jid, why in update.members))
            elif isinstance(update, Invited):
                self._watch(self._list_when_entered(update.group))
            self.refresh_conversations()

    async def _list_when_entered(self, group: JID) -> None:
        """List a group we were added to once this client is in it and knows its name."""
        with contextlib.suppress(TimeoutError):
            await self.client.groups.entered(group, ENTERING)
        self.refresh_conversations()

    def _group(self, peer: JID | None) -> Group | None:
        """The group ``peer`` names, if it is one of this account's."""
        return next((g for g in self.client.groups.known() if g.jid == peer), None)

    async def _receipts(self) -> None:
        async for receipt in self.client.receipts():
            try:
                if receipt.outgoing:
                    self._refresh_line("out", receipt.peer, receipt.id)
                self.refresh_conversations()
            except Exception as err:
                self._failed(err)

    async def _connection(self) -> None:
        async for event in self.client.events():
            if isinstance(event, Connected):
                self.connection = "connected"
                # What the outbox sent again after the reconnect moved on meanwhile.
                self._show_history()
            elif event.reconnecting:
                self.connection = f"reconnecting ({event.reason})"
            else:
                self.connection = f"disconnected: {event.reason}"
            self.refresh_status()

    async def _key_changes(self) -> None:
        async for change in self.client.omemo.key_changes():
            self.key_changes[change.jid] = change
            if change.jid == self.peer:
                self._watch(self._check_devices(change.jid))
            self.refresh_banner()
            self.refresh_conversations()

    async def _typing(self) -> None:
        async for change in self.client.chat_states():
            if change.sender.bare == self.peer:
                text = f"{self.peer} is typing…" if change.state == "composing" else ""
                self.query_one("#typing", Static).update(text)

    # The conversation list -------------------------------------------------------------------

    def refresh_conversations(self) -> None:
        now = datetime.now(UTC)
        listed = self.client.store.conversations()
        groups = {g.jid: g for g in self.client.groups.known()}
        options = [Option(lines.conversation_row(c, now, keys_changed=c.peer in self.key_changes,
                                                 group=groups.get(c.peer)), id=str(c.peer))
                   for c in listed]
        known = {c.peer for c in listed}
        options += [Option(lines.contact_row(str(g.jid), group=g), id=str(g.jid))
                    for g in groups.values() if g.jid not in known]
        known.update(groups)
        if self.peer is not None and self.peer not in known:
            options.insert(0, Option(lines.contact_row(str(self.peer), keys_changed=self.peer in self.key_changes),
                                     id=str(self.peer)))
            known.add(self.peer)
        options += [Option(lines.contact_row(str(c.jid), keys_changed=c.jid in self.key_changes), id=str(c.jid))
                    for c in self.client.store.contacts() if c.jid not in known]
        listing = self.query_one("#conversations", OptionList)
        listing.set_options(options)
        if self.peer is not None:
            listing.highlighted = listing.get_option_index(str(self.peer))

    async def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None and JID.parse(event.option.id) != self.peer:
            await self.open_conversation(JID.parse(event.option.id))

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "to":
            await self._submit_address(event.input)
        elif event.input.id == "composer":
            self._submit_message(event.input)

    async def _submit_address(self, field: Input) -> None:
        text = field.value.strip()
        if not text:
            return
        try:
            peer = JID.parse(text)
        except JIDError as err:
            self.show_notice(f"invalid address {text!r}: {err}")
            return
        if peer.local is None:
            self.show_notice(f"{text!r} is not an account address (user@domain)")
            return
        field.value = ""
        await self.open_conversation(peer.bare)

    def action_new_conversation(self) -> None:
        self.query_one("#to", Input).focus()

    # One conversation ------------------------------------------------------------------------

    async def open_conversation(self, peer: JID) -> None:
        """Show the conversation with ``peer``, mark it read, and find out how to encrypt to them."""
        self.peer = peer
        self.show_notice(None)
        self.query_one("#typing", Static).update("")
        composer = self.query_one("#composer", Input)
        composer.disabled = False
        group = self._group(peer)
        composer.placeholder = f"Message to {'the group ' + (group.name or str(peer)) if group else peer}, Enter sends"
        self._show_history()
        composer.focus()
        self.refresh_conversations()
        self.refresh_status()
        self.refresh_banner()
        self._watch(self._check_devices(peer))
        last = next((m for m in reversed(self.client.store.history(peer, HISTORY))
                     if m.direction == "in" and m.message_id is not None), None)
        if last is not None and last.state != "read":
            self._watch(self._mark_read(peer, last.message_id or ""))

    def _show_history(self) -> None:
        """Draw the open conversation again from the store."""
        pane = self.query_one("#messages", VerticalScroll)
        pane.remove_children()
        self._lines.clear()
        if self.peer is None:
            return
        pane.mount_all([self._line(m) for m in self.client.store.history(self.peer, HISTORY)])
        pane.scroll_end(animate=False)

    def _line(self, message: StoredMessage) -> MessageLine:
        line = MessageLine(lines.message_line(message, datetime.now(UTC)), message, classes=message.direction)
        if message.message_id is not None:
            self._lines[(message.direction, message.message_id)] = line
        return line

    def _append(self, line: MessageLine) -> None:
        pane = self.query_one("#messages", VerticalScroll)
        pane.mount(line)
        pane.scroll_end(animate=False)

    def _refresh_line(self, direction: str, peer: JID, message_id: str) -> None:
        line = self._lines.get((direction, message_id))
        if line is None or peer != self.peer:
            return
        stored = self.client.store.message(peer, message_id, outgoing=direction == "out")
        if stored is not None:
            line.stored = stored
            line.update(lines.message_line(stored, datetime.now(UTC)))

    async def _mark_read(self, peer: JID, message_id: str) -> None:
        if self._group(peer) is not None:
            self.client.store.mark(peer, message_id, "read", outgoing=False, earlier=True)
            self.refresh_conversations()
            return
        try:
            await self.client.mark_read(peer, message_id)
        except ClientError as err:
            log.info("could not mark %s's messages read: %s", peer, err)
        self.refresh_conversations()

    async def _check_devices(self, peer: JID) -> None:
        group = self._group(peer)
        if group is not None:
            # Each message is encrypted to the members of that moment; sending says who cannot be.
            self.security[peer] = Security("🔒 encrypted group (OMEMO, every member's devices)") if group.private \
                else Security("✗ public channel", lines.refusal(
                    f"{peer} is a public channel, where OMEMO cannot work; {lines.UNENCRYPTED_HINT}"))
            if peer == self.peer:
                self.refresh_status()
                problem = self.security[peer].problem
                if problem is not None and peer not in self.plain:
                    self.show_notice(problem)
            return
        self.security[peer] = Security("🔒 checking the contact's keys…")
        self.refresh_status()
        try:
            devices = [d for d in await self.client.omemo.devices(peer) if d.active]
        except EncryptionRequired as err:
            self.security[peer] = Security("✗ cannot encrypt", lines.refusal(str(err)))
        except ClientError as err:
            self.security[peer] = Security(f"🔒 keys not checked ({err})")
        else:
            if not devices:
                self.security[peer] = Security(
                    "✗ cannot encrypt", lines.refusal(f"{peer} has no OMEMO devices; {lines.UNENCRYPTED_HINT}"))
            elif all(d.trust is Trust.DISTRUSTED for d in devices):
                self.security[peer] = Security(
                    "✗ cannot encrypt",
                    lines.refusal(f"you distrusted every key of {peer}; {lines.UNENCRYPTED_HINT}"))
            else:
                self.security[peer] = Security(
                    lines.encryption_summary(devices, blind_trust=self.client.omemo.settings.blind_trust))
        if peer == self.peer:
            self.refresh_status()
            problem = self.security[peer].problem
            if problem is not None and peer not in self.plain:
                self.show_notice(problem)

    # Sending ---------------------------------------------------------------------------------

    def _submit_message(self, composer: Input) -> None:
        text = composer.value
        if self.peer is None or not text.strip():
            return
        if text.strip() == "/call":
            composer.value = ""
            if self._group(self.peer) is not None:
                self.show_notice("Calls are between two people: a group cannot be called")
            else:
                self.call_bar.start(self.peer)
            return
        peer, encrypted = self.peer, self.peer not in self.plain
        if encrypted:
            problem = self.security.get(peer, Security("")).problem
            if problem is not None:
                # Known not to work: the text stays in the composer, nothing leaves.
                self.show_notice(f"Not sent: {problem}")
                return
        composer.value = ""
        self._watch(self._send(peer, text, encrypted, composer))

    async def _send(self, peer: JID, text: str, encrypted: bool, composer: Input) -> None:
        try:
            if self._group(peer) is not None:
                id = await self.client.groups.send(peer, text, encrypted=encrypted)
            else:
                id = await self.client.send(peer, text, encrypted=encrypted)
        except (EncryptionRequired, GroupError) as err:
            if not composer.value:
                composer.value = text
            self.show_notice(f"Not sent: {lines.refusal(str(err))}")
            return
        stored = self.client.store.sent_message(id)
        if stored is not None and peer == self.peer:
            self._append(self._line(stored))
        self.refresh_conversations()
        try:
            await self.client.acknowledged(id)
        except ClientError as err:
            log.info("message %s not acknowledged yet: %s", id, err)
        self._refresh_line("out", peer, id)

    async def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "composer" or self.peer is None or self._group(self.peer) is not None:
            return
        peer, state = self.peer, "composing" if event.value else "active"
        # Typing notifications are a courtesy: without a connection there is none.
        with contextlib.suppress(ClientError):
            await self.client.typing(peer, state)

    def action_toggle_encryption(self) -> None:
        if self.peer is None:
            return
        if self.peer in self.plain:
            self.plain.discard(self.peer)
            problem = self.security.get(self.peer, Security("")).problem
            self.show_notice(problem)
        else:
            self.plain.add(self.peer)
            self.show_notice(f"⚠ Unencrypted: what you send to {self.peer} now can be read by the servers. "
                             "Ctrl+T turns encryption on again.")
        self.refresh_status()

    # Calls -----------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The call keys are offered (and listed in the footer) only when they do something."""
        if action not in ("answer_call", "end_call", "toggle_saver"):
            return True
        bar = self.call_bar
        if action == "answer_call":
            return bar.ringing is not None
        if action == "end_call":
            return bar.ringing is not None or bar.in_call
        return bar.in_call

    def action_answer_call(self) -> None:
        self.call_bar.answer()
        self.refresh_bindings()

    def action_end_call(self) -> None:
        self.call_bar.end()
        self.refresh_bindings()

    def action_toggle_saver(self) -> None:
        self.call_bar.toggle_saver()

    # Header, banner, notices -----------------------------------------------------------------

    def refresh_status(self) -> None:
        parts = [str(self.client.account), self.connection]
        plain = self.peer is not None and self.peer in self.plain
        if self.peer is not None:
            security = self.security.get(self.peer)
            encryption = "⚠ UNENCRYPTED" if plain else security.summary if security else "🔒 encrypted (OMEMO)"
            parts.append(f"{self.peer}: {encryption}")
        status = self.query_one("#status", Static)
        status.update(" · ".join(parts))
        status.set_class(plain, "plain")

    def refresh_banner(self) -> None:
        shown = [change for jid, change in self.key_changes.items() if jid in (self.peer, self.client.account)]
        banner = self.query_one("#banner", Static)
        banner.update("\n".join(lines.key_change_banner(change) for change in shown))
        banner.set_class(bool(shown), "shown")

    def action_hide_banner(self) -> None:
        for jid in (self.peer, self.client.account):
            if jid is not None:
                self.key_changes.pop(jid, None)
        self.refresh_banner()
        self.refresh_conversations()

    def show_notice(self, text: str | None) -> None:
        notice = self.query_one("#notice", Static)
        notice.update(text or "")
        notice.set_class(bool(text), "shown")
