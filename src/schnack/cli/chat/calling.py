"""Calls in ``schnack chat``: the call line above the conversation, and what its keys do.

A call ringing here (XEP-0353) shows the caller with Ctrl+Y to answer and Ctrl+R to reject; a
second call while one is ringing or under way is rejected as ``busy``. ``/call`` typed in a
conversation calls its contact (every device rings). During a call the line shows the peer,
the duration, the profile (Ctrl+S switches the data saver, and the peer is asked to switch
too), whether the call is verified (the peer's DTLS fingerprint came OMEMO-encrypted by a device
whose key was verified) and the bytes each way; Ctrl+R hangs up. Afterwards the line says how the
call ended, and the call is appended to ``calls.jsonl`` in the account's directory, as
``schnack call`` does. A missed call goes there too (once), and one that never rang here (it came
while the account was offline) shows in the line as a missed call, unless it was over before
this device first logged in. Like ``schnack call``, a call here talks through the system's microphone and
speaker (a notification says if one is missing) and starts with the data saver as the account's setting
says (by default on metered links).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.widgets import Static

from ...client import Client
from ...client.calls.calls import Call, IncomingCall, MissedCall, describe, describe_missed
from ...client.calls.media import CallStats
from ...client.errors import ClientError
from ...client.metered import SaverChoice
from ...xmpp.jid import JID
from ...xmpp.payloads.jingle import Reason
from ..calls import data_saver_for, devices, record_missed, store
from . import lines

if TYPE_CHECKING:
    from ...client.calls.media import WavSink

log = logging.getLogger(__name__)


class CallBar(Static):
    """The call line; hidden while there is no call to show."""

    DEFAULT_CSS = """
    CallBar { display: none; background: $success; color: $text; padding: 0 1; text-style: bold; }
    CallBar.shown { display: block; }
    CallBar.ringing { background: $warning; }
    """

    def __init__(self, client: Client) -> None:
        super().__init__(id="call", markup=False)
        self.client = client
        self.ringing: IncomingCall | None = None
        self.call: Call | None = None
        self.stats = CallStats()
        self.last: str | None = None
        # The microphone and speaker of the call under way.
        self._devices = contextlib.ExitStack()
        self._saver = SaverChoice(False, "")
        # The calls that rang here, whose line tells how they ended.
        self._rang: set[str] = set()

    def on_mount(self) -> None:
        self._work(self._incoming())
        self._work(record_missed(self.client, self._missed_elsewhere))
        self.set_interval(1.0, self._tick)

    @property
    def in_call(self) -> bool:
        return self.call is not None and not self.call.ended.done()

    # What the user does ------------------------------------------------------------------------

    def start(self, peer: JID) -> None:
        """Call ``peer`` (``/call``)."""
        if self.ringing is not None or self.in_call:
            self.last = "📞 finish the call first (Ctrl+R)"
            self.refresh_line()
            return
        self._work(self._start(peer))

    async def _start(self, peer: JID) -> None:
        self.last = None
        self.stats = CallStats()
        self._saver = await data_saver_for(self.client, None)
        source, sink = self._open_devices()
        try:
            call = await self.client.call(peer, data_saver=self._saver.on, source=source, sink=sink)
        except BaseException:
            self._devices.close()
            raise
        self._follow(call)

    def _open_devices(self) -> tuple[Path | Iterator[bytes] | None, Path | WavSink | None]:
        """The system's microphone and speaker, held until the call ends."""
        self._devices.close()
        self._devices = contextlib.ExitStack()
        return devices(self._devices, None, None, self._missing_device)

    def _missing_device(self, text: str) -> None:
        """A device that is missing is told in a notification; the call goes on without it."""
        log.info("call: %s", text)
        self.app.notify(text, title="Call", severity="warning")

    def answer(self) -> None:
        incoming, self.ringing = self.ringing, None
        if incoming is not None:
            self.stats = CallStats()
            self._work(self._answer(incoming))

    async def _answer(self, incoming: IncomingCall) -> None:
        self._saver = await data_saver_for(self.client, None)
        source, sink = self._open_devices()
        try:
            call = await incoming.answer(data_saver=self._saver.on, source=source, sink=sink)
        except BaseException:
            self._devices.close()
            raise
        self._follow(call)

    def end(self) -> None:
        """Reject the call ringing here, or hang up the one under way."""
        incoming, self.ringing = self.ringing, None
        if incoming is not None:
            self._work(incoming.reject())
        elif self.call is not None and self.in_call:
            self._work(self._hang_up(self.call))
        self.refresh_line()

    async def _hang_up(self, call: Call) -> None:
        await call.hangup()

    def toggle_saver(self) -> None:
        if self.call is not None and self.in_call:
            self.call.set_data_saver(not self.call.data_saver)
            self.refresh_line()

    # Following the calls ---------------------------------------------------------------------

    def _work(self, work: Coroutine[Any, Any, None]) -> None:
        self.run_worker(self._guarded(work), exit_on_error=False)

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except ClientError as err:
            self.last = f"📞 {err}"
            self.refresh_line()

    async def _incoming(self) -> None:
        async for incoming in self.client.incoming_calls():
            self._rang.add(incoming.call.sid)
            if self.ringing is not None or self.in_call:
                await incoming.call.hangup(Reason("busy"))
                continue
            self.ringing, self.last = incoming, None
            self.refresh_line()
            self._work(self._missed(incoming))

    async def _missed(self, incoming: IncomingCall) -> None:
        ended = await incoming.call.ended
        if self.ringing is incoming:
            # The caller gave up, or another of our devices took it.
            self.ringing = None
            self.last = lines.call_ended(str(incoming.caller), describe(ended), 0.0, "")
            self.refresh_line()

    def _missed_elsewhere(self, missed: MissedCall) -> None:
        """A missed call that did not ring here gets the line (one that rang has it already)."""
        if missed.id not in self._rang:
            self.last = lines.missed_call(str(missed.caller.bare), missed.placed, describe_missed(missed.reason))
            self.refresh_line()

    def _follow(self, call: Call) -> None:
        self.call = call
        self.refresh_line()
        self._work(self._until_ended(call))

    async def _until_ended(self, call: Call) -> None:
        stats = await call.wait_ended()
        self._devices.close()
        ended = call.ended.result()
        if stats is not None:
            self.stats = stats
            directory = self.client.store.directory
            if directory is not None and stats.duration > 0:
                store(directory, call, stats, self._saver)
        self.last = lines.call_ended(str(call.peer), describe(ended), self.stats.duration, call.verification.state)
        self.refresh_line()

    async def _tick(self) -> None:
        call = self.call
        if call is None or not self.in_call or call.media is None or not call.connected.is_set():
            return
        try:
            self.stats = await call.media.stats()
        except Exception:
            log.debug("no call statistics this time", exc_info=True)
        self.refresh_line()

    def refresh_line(self) -> None:
        if self.ringing is not None:
            text = lines.call_ringing(str(self.ringing.caller))
        elif self.call is not None and self.in_call:
            call = self.call
            text = lines.call_status(str(call.peer), connected=call.connected.is_set(), duration=self.stats.duration,
                                     data_saver=call.data_saver, verification=call.verification.state,
                                     sent=self.stats.bytes_sent, received=self.stats.bytes_received)  # fmt: skip
        else:
            text = self.last or ""
        self.update(text)
        self.set_class(bool(text), "shown")
        self.set_class(self.ringing is not None, "ringing")
        # The footer offers the call keys that do something now.
        self.app.refresh_bindings()
