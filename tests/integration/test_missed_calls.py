"""Missed calls (XEP-0353) between schnack clients through the real server on loopback sockets:
a call the caller gives up while it rings, one that rings out, one turned away as busy, one
placed while every device of the callee was off (from offline storage at the next login, and
again from the archive), and one too old to ring are each told once; a call answered on
another device of the account, or declined, is no missed call, also for a device that reads
it from the archive later, and also when the caller rang longer than this device does and
another device answered after this one gave up ringing. A new device reads the calls the
account missed before it from the archive, and tells them flagged as earlier, not as news. A
caller that vanishes without its <retract/> (slixmpp, its connection cut) leaves a missed call
told as soon as its device is known to be gone, not minutes later; our <ringing/> coming back
as an error is a sign of that, not a reason to decline the call; a caller that binds its
resource again in a new session meanwhile is not gone. A schnack caller shows the callee its
presence for the call, so that its server tells the callee when it leaves."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import pytest
from slixmpp import JID as SlixJID
from slixmpp import Iq

from schnack.client import Client
from schnack.client.calls.calls import (
    BUSY,
    CANCELLED,
    FIRST_LOGIN_SETTING,
    GONE,
    GONE_GRACE,
    OFFLINE,
    PROBE_INTERVAL,
    UNANSWERED,
    Call,
    MissedCall,
)
from schnack.client.calls.session import RING_TIMEOUT, State
from schnack.client.features.presence import PresenceUpdate
from schnack.client.feed import Subscription
from schnack.client.store import Store
from schnack.server.app import Server
from schnack.server.modules.mam import STORE
from schnack.xmpp import ns
from schnack.xmpp.errors import StanzaError
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads import jmi
from schnack.xmpp.payloads.jingle import Reason
from schnack.xmpp.payloads.jingle_rtp import NS as RTP_NS
from schnack.xmpp.payloads.jingle_rtp import RtpDescription
from schnack.xmpp.payloads.jmi import JingleMessage
from schnack.xmpp.stanza import Stanza
from schnack.xmpp.xml import element, qname, serialize

from .slix import SlixClient
from .test_calls import MESSAGE, raw_client
from .test_calls_media import (
    WAIT,
    Devices,
    cut_off,
    devices,
    devices_and_proxy,
    ended,
    ringing_on_phone_and_desk,
    rings,
)

__all__ = ["devices"]  # the fixture, used by name

PING = qname(ns.PING, "ping")
DISCO_INFO = qname(ns.DISCO_INFO, "query")

# How far the clocks of the test's clients and server may be from each other (the same machine).
CLOCK = timedelta(seconds=2)


def jmi_message(to: JID | str, message: JingleMessage, sent: datetime | None = None) -> Element:
    """A message carrying ``message`` as XEP-0353 clients send it, stamped (XEP-0203) as sent at
    ``sent`` if given, as a resumed session or offline storage hands over what it held."""
    children = [message.to_xml(), element("{urn:xmpp:hints}store")]
    if sent is not None:
        children.append(element(qname(ns.DELAY, "delay"), {"stamp": sent.strftime("%Y-%m-%dT%H:%M:%SZ")}))
    return element(qname(ns.CLIENT, "message"), {"to": str(to), "type": "chat"}, children=tuple(children))


def proposal(sid: str) -> JingleMessage:
    return JingleMessage("propose", sid, (RtpDescription("audio"),))


async def archived_call(server: Server, sid: str, days: float) -> None:
    """A call alice gave up ``days`` ago, found only in bob's archive: no device of his that
    is still around got it (offline storage gave it to one long gone)."""
    when = time.time() - days * 86400
    for offset, message in enumerate((proposal(sid), JingleMessage("retract", sid, reason=Reason("cancel")))):
        el = jmi_message("bob@localhost", message)
        el.set("from", "alice@localhost/laptop")
        await server.storage.archive.append("localhost", "bob", STORE, when + offset, "alice@localhost",
                                            serialize(el).encode())  # fmt: skip


async def next_missed(missed: Subscription[MissedCall]) -> MissedCall:
    async with asyncio.timeout(WAIT):
        return await anext(missed)


async def given_up(alice: Client, *bob: Client) -> Call:
    """A call from alice that rings on ``bob`` and that she gives up: each of those devices
    tells it as missed, and it comes after any missed call told before it."""
    ringing = [asyncio.ensure_future(rings(device)) for device in bob]
    await asyncio.sleep(0)
    call = await alice.call("bob@localhost")
    for r in ringing:
        await r
    await call.hangup()
    return call


async def none_missed(devices: Devices, alice: Client, told: dict[Client, Subscription[MissedCall]]) -> None:
    """No device of bob told a missed call: those ``told`` that rang, nor his laptop, which was
    off and reads the calls from the archive as it logs in now. A call alice gives up next is
    the first each of them tells."""
    laptop = devices.client("bob@localhost/laptop")
    told[laptop] = laptop.missed_calls()
    await laptop.connect()
    await laptop.caught_up(timeout=WAIT)
    later = await given_up(alice, *told)
    for missed in told.values():
        assert (await next_missed(missed)).id == later.sid


async def test_a_call_given_up_while_ringing_is_missed_once(devices: Devices) -> None:
    alice = await devices.login("alice@localhost/laptop")
    phone = await devices.login("bob@localhost/phone")
    missed = phone.missed_calls()
    before = datetime.now(UTC)
    call = await given_up(alice, phone)
    first = await next_missed(missed)
    assert (first.caller, first.id, first.reason) == (alice.jid, call.sid, CANCELLED)
    assert before - CLOCK <= first.placed <= datetime.now(UTC) + CLOCK
    second = await given_up(alice, phone)
    assert (await next_missed(missed)).id == second.sid  # the first is not told again


async def test_a_call_that_rings_out_or_is_turned_away_busy_is_missed(devices: Devices) -> None:
    alice = await devices.login("alice@localhost/laptop")
    phone = await devices.login("bob@localhost/phone")
    missed = phone.missed_calls()
    ringing = asyncio.ensure_future(rings(phone))
    await asyncio.sleep(0)
    call = await alice.call("bob@localhost", ring_timeout=1.0)
    await ringing
    assert await ended(call) == "timeout"
    told = await next_missed(missed)
    assert (told.id, told.reason) == (call.sid, UNANSWERED)

    ringing = asyncio.ensure_future(rings(phone))
    await asyncio.sleep(0)
    call = await alice.call("bob@localhost")
    await (await ringing).call.hangup(Reason("busy"))  # as schnack chat does during another call
    assert await ended(call) == "busy"
    told = await next_missed(missed)
    assert (told.id, told.reason) == (call.sid, BUSY)


async def test_a_call_while_the_callee_was_off_is_told_at_login_once(devices: Devices) -> None:
    """Proposal and retract wait in offline storage and in the archive: the phone, logging in,
    tells the call once, placed when alice placed it, though both come again from the
    archive catch-up."""
    alice = await devices.login("alice@localhost/laptop")
    before = datetime.now(UTC)
    call = await alice.call("bob@localhost", ring_timeout=1.0)
    assert await ended(call) == "timeout"
    placed_by = datetime.now(UTC)
    phone = devices.client("bob@localhost/phone")
    missed = phone.missed_calls()
    await phone.connect()
    told = await next_missed(missed)
    assert (told.caller, told.id, told.reason) == (alice.jid, call.sid, UNANSWERED)
    assert before - CLOCK <= told.placed <= placed_by + CLOCK
    await phone.caught_up(timeout=WAIT)
    later = await given_up(alice, phone)
    assert (await next_missed(missed)).id == later.sid


async def test_a_missed_call_is_not_told_again_at_the_next_login(devices: Devices, tmp_path: Path) -> None:
    """The archive catch-up of the phone's next login reads the call again (the catch-up before
    it ended before the call came): it is not told again."""
    alice = await devices.login("alice@localhost/laptop")
    for _ in range(2):
        phone = devices.client("bob@localhost/phone", data_dir=tmp_path / "phone")
        missed = phone.missed_calls()
        await phone.connect()
        await phone.caught_up(timeout=WAIT)
        call = await given_up(alice, phone)
        # At the second login, the call of the first comes from the archive and is not told.
        assert (await next_missed(missed)).id == call.sid
        await phone.close()


async def test_a_proposal_too_old_to_ring_is_missed(devices: Devices) -> None:
    """A proposal held in offline storage for longer than a call rings, without a retract (the
    caller's client went away): it does not ring, but it is told, placed at its stamp."""
    alice = await devices.login("alice@localhost/laptop")
    await alice.send_element(jmi_message("bob@localhost", proposal("old-call"), datetime(2026, 1, 1, tzinfo=UTC)))
    await alice.roster()  # a round trip: the server has stored it
    phone = devices.client("bob@localhost/phone")
    missed = phone.missed_calls()
    ringing = phone.incoming_calls()
    await phone.connect()
    told = await next_missed(missed)
    assert (told.caller, told.id, told.reason) == (alice.jid, "old-call", OFFLINE)
    assert told.placed == datetime(2026, 1, 1, tzinfo=UTC)
    await phone.caught_up(timeout=WAIT)
    later = await given_up(alice, phone)
    assert (await next_missed(missed)).id == later.sid
    async with asyncio.timeout(WAIT):
        assert (await anext(ringing)).call.sid == later.sid  # the old one never rang


async def test_a_call_answered_on_another_device_is_not_missed(devices: Devices) -> None:
    """The phone answers: the desk, which rang too, and the laptop, which was off and reads the
    call from the archive at its login, tell no missed call."""
    call, answering, other = await ringing_on_phone_and_desk(devices)
    alice, phone, desk = devices.clients
    answered = await answering.answer()
    assert await ended(other.call) == "cancel"  # answered on another device
    async with asyncio.timeout(WAIT):
        await call.answered.wait()
    await call.hangup()
    await answered.wait_ended()
    await none_missed(devices, alice, {phone: phone.missed_calls(), desk: desk.missed_calls()})


async def test_a_declined_call_is_not_missed(devices: Devices) -> None:
    call, declining, other = await ringing_on_phone_and_desk(devices)
    alice, phone, desk = devices.clients
    await declining.reject()
    assert await ended(call) == "decline" and await ended(other.call) == "decline"
    await none_missed(devices, alice, {phone: phone.missed_calls(), desk: desk.missed_calls()})


async def rung_out(devices: Devices, sid: str) -> tuple[Client, Client, Subscription[MissedCall]]:
    """Alice's call ``sid`` rings on bob's phone until the phone gives up: her proposal is
    stamped as sent a little less than the phone's ring time ago, as a caller that rings longer
    than we do would have sent it that long ago. Alice, the phone and its missed calls."""
    alice = await devices.login("alice@localhost/laptop")
    phone = await devices.login("bob@localhost/phone")
    missed = phone.missed_calls()
    ringing = asyncio.ensure_future(rings(phone))
    await asyncio.sleep(0)
    sent = datetime.now(UTC) - timedelta(seconds=RING_TIMEOUT - 10)
    await alice.send_element(jmi_message("bob@localhost", proposal(sid), sent))
    incoming = await ringing
    assert await ended(incoming.call) == "timeout"  # the phone's own ring time ran out
    return alice, phone, missed


@pytest.mark.parametrize("answer", ["accept", "proceed"])
async def test_a_call_answered_elsewhere_after_it_rang_out_here_is_not_missed(devices: Devices, answer: str) -> None:
    """The caller rings on after the phone gave up, and bob answers on his desk (another app,
    which rings longer): its <accept/> to bob's bare JID, or the carbon of its <proceed/> to
    alice, reaches the phone, which tells no missed call."""
    alice, phone, missed = await rung_out(devices, "long-ringing")
    desk, _ = await raw_client(devices.server, "bob", "desk")
    try:
        to, kind = ("bob@localhost", "accept") if answer == "accept" else (alice.jid, "proceed")
        desk.send(serialize(jmi_message(to, JingleMessage(kind, "long-ringing"))))
        later = await given_up(alice, phone)
        assert (await next_missed(missed)).id == later.sid
    finally:
        desk.close()


async def test_a_call_that_rang_out_here_is_missed_once_the_caller_gives_up(devices: Devices) -> None:
    """Nobody answers on any device after the phone gave up ringing: the caller's <retract/>
    (its own ring time ran out) makes it a missed call, told once."""
    alice, phone, missed = await rung_out(devices, "long-ringing")
    await alice.send_element(jmi_message("bob@localhost", JingleMessage("retract", "long-ringing", reason=Reason("timeout"))))
    told = await next_missed(missed)
    assert (told.caller, told.id, told.reason) == (alice.jid, "long-ringing", UNANSWERED)
    later = await given_up(alice, phone)
    assert (await next_missed(missed)).id == later.sid


async def test_a_proposal_past_its_ring_time_answered_elsewhere_later_is_not_missed(devices: Devices) -> None:
    """A proposal from offline storage stamped longer ago than we ring does not ring on the
    phone, but the caller may still ring: bob's desk answers it once the phone is online, and
    the phone tells no missed call."""
    alice = await devices.login("alice@localhost/laptop")
    sent = datetime.now(UTC) - timedelta(seconds=RING_TIMEOUT + 30)
    await alice.send_element(jmi_message("bob@localhost", proposal("rings-on"), sent))
    await alice.roster()  # a round trip: the server has stored it
    phone = devices.client("bob@localhost/phone")
    missed = phone.missed_calls()
    ringing = phone.incoming_calls()
    await phone.connect()
    await phone.caught_up(timeout=WAIT)
    await phone.roster()  # a round trip: what came at login has been looked at
    desk, _ = await raw_client(devices.server, "bob", "desk")
    try:
        desk.send(serialize(jmi_message("bob@localhost", JingleMessage("accept", "rings-on"))))
        later = await given_up(alice, phone)
        assert (await next_missed(missed)).id == later.sid
        async with asyncio.timeout(WAIT):
            assert (await anext(ringing)).call.sid == later.sid  # the old one did not ring
    finally:
        desk.close()


async def test_a_new_device_tells_the_calls_missed_before_it_as_earlier(devices: Devices, tmp_path: Path) -> None:
    """bob's account missed a call three days ago. The tablet, logging in for the first time,
    reads it in its first catch-up of the archive (which reaches back 30 days): told, but
    flagged earlier, not news. To the phone, which first logged in a week ago and was off since,
    it is news. A call missed after the tablet's first login is news to both."""
    alice = await devices.login("alice@localhost/laptop")
    await archived_call(devices.server, "old-call", days=3)
    kept = Store(tmp_path / "phone")
    kept.save_setting(FIRST_LOGIN_SETTING, (datetime.now(UTC) - timedelta(days=7)).isoformat())
    kept.close()
    phone = devices.client("bob@localhost/phone", data_dir=tmp_path / "phone")
    tablet = devices.client("bob@localhost/tablet")
    told: dict[Client, Subscription[MissedCall]] = {}
    for device, earlier in ((phone, False), (tablet, True)):
        told[device] = device.missed_calls()
        await device.connect()
        await device.caught_up(timeout=WAIT)
        old = await next_missed(told[device])
        assert (old.id, old.reason, old.earlier) == ("old-call", CANCELLED, earlier)
        assert abs(old.placed - (datetime.now(UTC) - timedelta(days=3))) < timedelta(minutes=1)
    later = await given_up(alice, phone, tablet)
    for missed in told.values():
        new = await next_missed(missed)
        assert (new.id, new.earlier) == (later.sid, False)


class Caller(SlixClient):
    """Alice on slixmpp, which proposes from her full JID as Conversations does and answers
    pings (or, ``pings=False``, refuses them as a client without XEP-0199 does, with
    feature-not-implemented) and disco#info; it notes what it is asked."""

    def __init__(self, server: Server, pings: bool = True) -> None:
        super().__init__(server, "alice@localhost/mobile")
        self.xmpp.register_plugin("xep_0030")
        self.xmpp.register_plugin("xep_0353")
        if not pings:
            self.xmpp.remove_handler("Ping")
        self.questions: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.xmpp.add_filter("in", self._note_questions)

    def _note_questions(self, stanza: Any) -> Any:
        if isinstance(stanza, Iq) and stanza["type"] == "get" and len(stanza.xml):
            self.questions[stanza.xml[0].tag].set()
        return stanza

    async def asked(self, tag: str) -> None:
        """Until an IQ get for ``tag`` reaches it, and its answer is out."""
        async with asyncio.timeout(WAIT):
            await self.questions[tag].wait()
        await self.sync()


async def slixmpp_caller(devices: Devices, phone: Client, subscribed: bool, pings: bool = True) -> Caller:
    """Alice's device; with ``subscribed``, bob's phone sees her presence."""
    caller = Caller(devices.server, pings)
    assert await caller.start()
    caller.xmpp.send_presence()
    if subscribed:
        updates = phone.presence()
        await phone.subscribe("alice@localhost")  # slixmpp approves by itself
        async with asyncio.timeout(WAIT):
            async for update in updates:
                if update.jid == JID.parse("alice@localhost/mobile") and update.kind == "available":
                    break
    await caller.sync()
    return caller


def vanish(caller: Caller) -> None:
    """The caller's phone loses its network: the connection is cut, no <retract/> goes out."""
    caller.xmpp.abort()


@pytest.mark.parametrize("subscribed", [False, True])
async def test_a_call_whose_caller_vanishes_while_it_rings_is_missed_at_once(devices: Devices, subscribed: bool) -> None:
    """The phone rings and alice's device goes away without a word: the phone learns it from her
    unavailable presence when it sees her presence, or else from a ping to her full JID that the
    server answers with service-unavailable. It stops ringing and tells the missed call then,
    not after its ring time and the wait for the call's outcome."""
    phone = await devices.login("bob@localhost/phone")
    missed = phone.missed_calls()
    caller = await slixmpp_caller(devices, phone, subscribed)
    try:
        ringing = asyncio.ensure_future(rings(phone))
        await asyncio.sleep(0)
        caller.xmpp.plugin["xep_0353"].propose(SlixJID("bob@localhost"), "vanishing", [(RTP_NS, "audio")])
        incoming = await ringing
        await caller.asked(PING)  # the phone found her there as it began to ring
        vanish(caller)
        # Seen offline, the caller is probed at once; unseen, by the next probe; found not there,
        # once more after the grace.
        within = GONE_GRACE + 5.0 if subscribed else PROBE_INTERVAL + GONE_GRACE + 5.0
        async with asyncio.timeout(within):
            told = await anext(missed)
        assert (told.caller, told.id, told.reason) == (JID.parse("alice@localhost/mobile"), "vanishing", GONE)
        assert await ended(incoming.call) == "gone"
    finally:
        await caller.stop()


async def test_a_caller_that_binds_its_resource_again_is_not_taken_for_gone(devices: Devices) -> None:
    """Alice's session ends under the call (her resumption failed) and her device binds the same
    resource in a new session. The phone, which sees her unavailable presence, asks at once and
    finds nobody at her full JID in between: it asks again a little later, finds her there, and
    the call rings on until she hangs up, missed as cancelled, not as gone."""
    phone = await devices.login("bob@localhost/phone")
    missed = phone.missed_calls()
    caller = await slixmpp_caller(devices, phone, subscribed=True)
    back = Caller(devices.server)
    try:
        updates = phone.presence()
        ringing = asyncio.ensure_future(rings(phone))
        await asyncio.sleep(0)
        caller.xmpp.plugin["xep_0353"].propose(SlixJID("bob@localhost"), "rebound", [(RTP_NS, "audio")])
        incoming = await ringing
        await caller.asked(PING)
        vanish(caller)
        async with asyncio.timeout(WAIT):
            async for update in updates:
                if update.jid == JID.parse("alice@localhost/mobile") and update.kind == "unavailable":
                    break
        assert await back.start()
        back.xmpp.send_presence()
        await back.asked(PING)  # the phone asked again, and she answered
        await phone.roster()  # a round trip: the phone has read her answer
        assert incoming.call.state is State.RINGING
        back.xmpp.send_raw(serialize(jmi_message("bob@localhost", JingleMessage("retract", "rebound", reason=Reason("cancel")))))
        told = await next_missed(missed)
        assert (told.id, told.reason) == ("rebound", CANCELLED)
        assert await ended(incoming.call) == "cancel"
    finally:
        await caller.stop()
        await back.stop()


async def seen(updates: Subscription[PresenceUpdate], jid: JID, kind: str) -> None:
    """Until presence of ``kind`` from ``jid`` comes among ``updates``."""
    async with asyncio.timeout(WAIT):
        async for update in updates:
            if update.jid == jid and update.kind == kind:
                return


async def test_a_caller_shows_its_presence_to_the_callee_for_the_call(devices: Devices) -> None:
    """Bob does not see alice's presence: her schnack sends it to him with the proposal
    (XEP-0353 §3.1), and withdraws it once the call is over, though she stays online."""
    alice = await devices.login("alice@localhost/laptop")
    phone = await devices.login("bob@localhost/phone")
    updates = phone.presence()
    ringing = asyncio.ensure_future(rings(phone))
    await asyncio.sleep(0)
    call = await alice.call("bob@localhost")
    await ringing
    await seen(updates, alice.jid, "available")
    await call.hangup()
    await seen(updates, alice.jid, "unavailable")
    assert alice.connected


async def test_a_call_whose_schnack_caller_vanishes_is_missed_as_its_session_ends(tmp_path: Path) -> None:
    """Alice's link dies without a word while the call rings on bob's phone, which does not see
    her presence. Once her server ends her session (its hibernation, XEP-0198, ran out), it
    sends bob the unavailable presence of the device that had sent him its presence with the
    proposal (RFC 6121 §4.6.3), and the phone asks at once rather than at its next probe."""
    async with devices_and_proxy(tmp_path, {"sm": {"resume_timeout": 1}}) as (devices, proxy):
        alice = await devices.login("alice@localhost/laptop", via=proxy)
        phone = await devices.login("bob@localhost/phone")
        missed = phone.missed_calls()
        updates = phone.presence()
        ringing = asyncio.ensure_future(rings(phone))
        await asyncio.sleep(0)
        call = await alice.call("bob@localhost")
        incoming = await ringing
        await cut_off(alice, proxy)
        await seen(updates, alice.jid, "unavailable")
        told = await next_missed(missed)
        assert (told.caller, told.id, told.reason) == (alice.jid, call.sid, GONE)
        assert await ended(incoming.call) == "gone"


async def test_a_call_that_rang_out_here_is_missed_once_its_caller_vanishes(devices: Devices) -> None:
    """The phone gave up ringing and waits for what became of the call; alice's device then goes
    away without a <retract/>: nobody can answer it any more, and the phone tells it as missed
    by its next probe of her full JID, not 5 minutes after it was placed."""
    phone = await devices.login("bob@localhost/phone")
    missed = phone.missed_calls()
    caller = await slixmpp_caller(devices, phone, subscribed=False)
    try:
        ringing = asyncio.ensure_future(rings(phone))
        await asyncio.sleep(0)
        # Sent a little less than our ring time ago, by a caller that rings longer than we do.
        sent = datetime.now(UTC) - timedelta(seconds=RING_TIMEOUT - 5)
        caller.xmpp.send_raw(serialize(jmi_message("bob@localhost", proposal("rang-out"), sent)))
        incoming = await ringing
        assert await ended(incoming.call) == "timeout"
        vanish(caller)
        async with asyncio.timeout(PROBE_INTERVAL + GONE_GRACE + 5.0):
            told = await anext(missed)
        assert (told.caller, told.id, told.reason) == (JID.parse("alice@localhost/mobile"), "rang-out", UNANSWERED)
    finally:
        await caller.stop()


async def test_a_caller_that_does_not_answer_pings_is_not_taken_for_gone(devices: Devices) -> None:
    """A caller's client without XEP-0199 refuses the ping, but it answers disco#info: the call
    rings on. Once the device is gone, the server's service-unavailable for both tells it."""
    phone = await devices.login("bob@localhost/phone")
    missed = phone.missed_calls()
    caller = await slixmpp_caller(devices, phone, subscribed=False, pings=False)
    try:
        ringing = asyncio.ensure_future(rings(phone))
        await asyncio.sleep(0)
        caller.xmpp.plugin["xep_0353"].propose(SlixJID("bob@localhost"), "no-pings", [(RTP_NS, "audio")])
        incoming = await ringing
        await caller.asked(DISCO_INFO)
        await phone.roster()  # a round trip: the phone has read her answer
        assert incoming.call.state is State.RINGING
        vanish(caller)
        async with asyncio.timeout(PROBE_INTERVAL + GONE_GRACE + 5.0):
            told = await anext(missed)
        assert (told.id, told.reason) == ("no-pings", GONE)
    finally:
        await caller.stop()


async def test_a_bounced_ringing_declines_nothing_and_the_call_is_missed(devices: Devices) -> None:
    """The phone's <ringing/> comes back as an error (the caller's server could not hand it
    over), and alice's device is gone. Rejecting the call for that would stop bob's desk as if
    bob declined it, and neither would tell a missed call: instead the phone asks whether alice's
    device is there, and both stop ringing and tell the call as missed once it is not."""
    phone = await devices.login("bob@localhost/phone")
    desk = await devices.login("bob@localhost/desk")
    told = [phone.missed_calls(), desk.missed_calls()]
    wire, alice = await raw_client(devices.server, "alice", "mobile")
    ringing = [asyncio.ensure_future(rings(device)) for device in (phone, desk)]
    await asyncio.sleep(0)
    wire.send(serialize(jmi_message("bob@localhost", proposal("bounced"))))
    incoming = [await r for r in ringing]
    while True:
        el = await wire.next(timeout=WAIT)
        assert el is not None, "the server closed the stream"
        if el.tag == MESSAGE and el.get("from") == str(phone.jid) and jmi.find(el) == JingleMessage("ringing", "bounced"):
            break
    wire.send(serialize(Stanza.parse(el).error(StanzaError("remote-server-timeout"))))
    wire.close()
    for missed in told:
        async with asyncio.timeout(PROBE_INTERVAL + GONE_GRACE + 5.0):
            call = await anext(missed)
        assert (call.caller, call.id, call.reason) == (alice, "bounced", GONE)
    for each in incoming:
        assert await ended(each.call) == "gone"
