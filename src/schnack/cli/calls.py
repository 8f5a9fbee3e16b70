"""The call commands of ``schnack``: ``call`` and ``answer`` (XEP-0353 audio calls).

``schnack call JID`` rings every device of JID and, once one answers, plays ``--play FILE`` (any
audio FFmpeg reads) and records what it hears to ``--record FILE`` (WAV) until ``--duration``
seconds have passed, the peer hangs up, or the command is interrupted (Ctrl-C, SIGTERM), which
hangs up. ``schnack answer`` waits for a call and takes it (``--reject`` declines it). Without
``--play`` the system's default microphone speaks, without ``--record`` the default speaker
plays what is heard (ALSA, :mod:`schnack.client.calls.audio`); a system without one says so in a
line on stderr, and the call goes on with silence, or unheard.

The data saver is on when asked for (``--data-saver``, ``--no-data-saver``), else as the
account's setting says (``schnack calls data-saver``): by default on when the link to the server
is metered (:mod:`schnack.client.metered`); the summary says why.

While talking, each line read from stdin is a command: ``s`` switches the data saver on or off
(our encoder switches, and the peer is asked to send that way too), ``h`` hangs up. Without a
terminal or pipe on stdin (or at its end) the call simply runs on.

Once connected, both say whether the call is verified: the peer's DTLS fingerprint came
OMEMO-encrypted by a device whose key the user verified (``schnack omemo trust``), or not.
Afterwards both print the call's duration, the bytes sent and received (with their headers),
the packet loss, the round-trip time, the verification and whether (and why) the data saver was
on, and append them as a JSON line to ``calls.jsonl`` in the account's directory (listed by
``schnack calls``). A call missed while ``schnack call`` or ``schnack answer`` runs (another
call that rang here meanwhile and was not taken, one whose caller gave up before it rang here,
one that came while the account was offline) goes there too, as ``schnack listen`` and
``schnack chat`` record them, and is told in a line on stderr. ``schnack call``, busy with its
own call, turns away any other that comes meanwhile as busy; so does ``schnack answer`` once it
took one. Failures are one line on stderr
and exit 1 (the call
was rejected, nobody answered, the callee cannot be called, no media connection, a DTLS
certificate that does not match the fingerprint).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .client import account_option, chosen_account, client_factory, fail, missed_line, note, parse_jid, run

if TYPE_CHECKING:
    from ..client import Client
    from ..client.calls.calls import Call, IncomingCall, MissedCall
    from ..client.calls.media import CallStats, WavSink
    from ..client.metered import SaverChoice
    from ..xmpp.jid import JID

CONNECT_WAIT = 60.0

# How a missed call ends in ``calls.jsonl``.
MISSED = "missed"

play_option = click.option("--play", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                           help="An audio file to send (default: the microphone).")  # fmt: skip
record_option = click.option("--record", type=click.Path(dir_okay=False, writable=True, path_type=Path),
                             help="Write the audio received to this WAV file (default: play it).")  # fmt: skip
duration_option = click.option("--duration", type=click.FloatRange(min=0, min_open=True),
                               help="Hang up after this many seconds of talking.")  # fmt: skip
saver_option = click.option("--data-saver/--no-data-saver", default=None,
                            help="About 12 kbit/s in 120 ms frames, nothing sent in silence (instead of 48 kbit/s in 40 ms frames); "
                                 "default: the account's setting (schnack calls data-saver), on metered links only.")  # fmt: skip
relay_option = click.option("--relay-only", is_flag=True,
                            help="Send media only through the server's TURN relay (hides our address).")  # fmt: skip


def checked(play: Path | None) -> None:
    """One line and exit 1 for a file to play that is no audio, before any call is made."""
    if play is None:
        return
    from ..client.calls.media import MediaError, check_audio_file

    try:
        check_audio_file(play)
    except MediaError as err:
        fail(str(err))


def devices(stack: contextlib.ExitStack, play: Path | None, record: Path | None,
            tell: Callable[[str], None] = note) -> tuple[Path | Iterator[bytes] | None, Path | WavSink | None]:  # fmt: skip
    """What the call sends and where what is heard goes: the files given, else the system's
    microphone and speaker, kept open by ``stack``; ``tell`` (a line on stderr) says which
    device is missing."""
    from ..client.audio import NoAudioDevice
    from ..client.calls.audio import Microphone, Speaker

    source: Path | Iterator[bytes] | None = play
    sink: Path | WavSink | None = record
    if play is None:
        try:
            source = stack.enter_context(Microphone())
        except NoAudioDevice as err:
            tell(f"no microphone: sending silence ({err})")
    if record is None:
        try:
            sink = stack.enter_context(Speaker())
        except NoAudioDevice as err:
            tell(f"no speaker: what the peer says is not played ({err})")
    return source, sink


async def data_saver_for(client: Client, asked: bool | None) -> SaverChoice:
    """Whether the call starts with the data saver: as asked, else as the account's setting says
    (looking at the link runs ``ip`` and ``nmcli``, so in a thread)."""
    from ..client.metered import SETTING, SaverChoice, choose, parse_mode

    if asked is not None:
        return SaverChoice(asked, "asked for" if asked else "--no-data-saver")
    return await asyncio.to_thread(choose, parse_mode(client.store.setting(SETTING)), client.server_address)


def saver_reason(call: Call, choice: SaverChoice) -> str:
    """Why the data saver is on (or off) at the end of the call."""
    return choice.reason if call.data_saver == choice.on else "switched during the call"


def summary(call: Call, stats: CallStats, saver: SaverChoice) -> list[str]:
    """The lines printed after a call."""
    minutes = stats.duration / 60
    per_minute = (stats.bytes_sent + stats.bytes_received) / 1000 / minutes if minutes else 0.0
    rtt = f"{stats.rtt * 1000:.0f} ms" if stats.rtt is not None else "unknown"
    return [
        f"call with {call.peer}: {stats.duration:.1f} s",
        f"sent {stats.bytes_sent / 1000:.1f} kB, received {stats.bytes_received / 1000:.1f} kB "
        f"({per_minute:.0f} kB per minute both ways)",
        f"packet loss {stats.loss * 100:.1f} %, round trip {rtt}",
        call.verification.describe(),
        f"data saver {'on' if call.data_saver else 'off'}: {saver_reason(call, saver)}",
    ]


def store(directory: Path, call: Call, stats: CallStats, saver: SaverChoice | None = None) -> None:
    """Append the call to ``calls.jsonl`` in the account's directory (what ``schnack calls`` lists)."""
    from ..client.calls.calls import describe

    record = {
        "ended": datetime.now(UTC).isoformat(timespec="seconds"),
        "peer": str(call.peer),
        "direction": "out" if call.session.role == "initiator" else "in",
        "duration": round(stats.duration, 3),
        "bytes_sent": stats.bytes_sent,
        "bytes_received": stats.bytes_received,
        "packets_received": stats.packets_received,
        "packets_lost": stats.packets_lost,
        "rtt": stats.rtt,
        "verified": call.verification.state,
        "omemo_device": call.verification.device.id if call.verification.device is not None else None,
        "data_saver": call.data_saver,
        "data_saver_reason": saver_reason(call, saver) if saver is not None else None,
        "ending": describe(call.ended.result()) if call.ended.done() else None,
    }
    with (directory / "calls.jsonl").open("a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")


def store_missed(directory: Path, missed: MissedCall) -> None:
    """Append a missed call to ``calls.jsonl``, unless it is there already (told by another
    command, or at an earlier login): an incoming call of no duration, placed at ``ended``,
    with ``ending`` "missed", why in ``missed`` and its JMI ``id``."""
    history = directory / "calls.jsonl"
    if _recorded(history, missed.id):
        return
    record = {"ended": missed.placed.isoformat(timespec="seconds"), "peer": str(missed.caller.bare),
              "direction": "in", "duration": 0, "bytes_sent": 0, "bytes_received": 0, "ending": MISSED,
              "missed": missed.reason, "id": missed.id}  # fmt: skip
    with history.open("a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")


def _recorded(history: Path, sid: str) -> bool:
    """Whether ``history`` holds the missed call ``sid``; a damaged line is no record of it."""
    if not history.is_file():
        return False
    with history.open(encoding="utf-8") as lines:
        for line in lines:
            with contextlib.suppress(ValueError):
                raw = json.loads(line)
                if isinstance(raw, dict) and raw.get("ending") == MISSED and raw.get("id") == sid:
                    return True
    return False


async def record_missed(client: Client, then: Callable[[MissedCall], None] = lambda _: None) -> None:
    """Until the client stops: each call missed (:meth:`~schnack.client.Client.missed_calls`)
    into the account's ``calls.jsonl``, then to ``then`` if it is news: one over before this
    device first logged in (a new device's first catch-up finds up to 30 days of them) goes
    only into the history."""
    async for missed in client.missed_calls():
        if client.store.directory is not None:
            store_missed(client.store.directory, missed)
        if not missed.earlier:
            then(missed)


async def turn_away_busy(calls: AsyncIterator[IncomingCall]) -> None:
    """Each call that rings while this command is busy with its own is rejected at once with
    reason ``busy`` (XEP-0353 §3.5, XEP-0166 §7.4), as ``schnack chat`` does, instead of ringing
    for nothing; it goes into the call history as missed."""
    from ..xmpp.payloads.jingle import Reason

    async for incoming in calls:
        await incoming.call.hangup(Reason("busy"))


def record_and_tell_missed(client: Client) -> asyncio.Task[None]:
    """For a command that runs on while calls may come (``call``, ``answer``): each missed call
    into the call history and in a line on stderr, until the task is cancelled."""
    return asyncio.ensure_future(record_missed(client, lambda missed: note(missed_line(missed))))


async def talk(directory: Path, call: Call, saver: SaverChoice, duration: float | None,
               connect_wait: float = CONNECT_WAIT) -> None:
    """Once connected: until ``duration`` is over, the peer hangs up, or we are interrupted; then
    the summary."""
    from ..client.calls.calls import CallFailed

    try:
        await call.wait_connected(connect_wait)
    except TimeoutError:
        await call.hangup()
        fail(f"no media connection with {call.peer} within {connect_wait:g} s")
    except CallFailed as err:
        fail(str(err))
    note(f"talking with {call.peer} ({call.verification.state}; type s and Enter to switch the data saver, h to hang up)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Ctrl-C and SIGTERM hang up while the call runs, and are the program's again afterwards.
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        waiting: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(stop.wait()), asyncio.shield(call.ended), asyncio.ensure_future(commands(call, stop)),
        ]  # fmt: skip
        await asyncio.wait(waiting, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
        for task in waiting:
            task.cancel()
        stats = await call.hangup() if not call.ended.done() else await call.wait_ended()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    if stats is None:
        fail("the call ended before any media flowed")
    for line in summary(call, stats, saver):
        click.echo(line)
    store(directory, call, stats, saver)


async def commands(call: Call, stop: asyncio.Event) -> None:
    """The commands typed during a call, a line each: ``s`` data saver on/off, ``h`` hang up.
    Returns only on ``h``; a stdin that cannot be read, or ends, leaves the call running."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        # Asked first: asyncio, given a stdin without a descriptor, leaves a half-made transport.
        sys.stdin.fileno()
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (ValueError, OSError):
        await stop.wait()  # a regular file or a closed stdin: nothing to read commands from
        return
    try:
        while line := await reader.readline():
            command = line.decode(errors="replace").strip().lower()
            if command == "s":
                call.set_data_saver(not call.data_saver)
                note(f"data saver {'on' if call.data_saver else 'off'}")
            elif command == "h":
                return
            elif command:
                note(f"unknown command {command!r}: s switches the data saver, h hangs up")
        await stop.wait()
    finally:
        # Once the call is over, stdin is no longer watched (and its transport not left to the
        # garbage collector).
        transport.close()


@click.command()
@click.argument("jid")
@account_option
@saver_option
@play_option
@record_option
@duration_option
@relay_option
@click.option("--ring-timeout", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds to let it ring before giving up.")  # fmt: skip
def call(jid: str, account: str | None, data_saver: bool | None, play: Path | None, record: Path | None,
         duration: float | None, relay_only: bool, ring_timeout: float) -> None:
    """Call JID (every device of it rings); talk until --duration, the peer hangs up, or Ctrl-C."""
    peer = parse_jid(jid)
    if peer.local is None:
        fail(f"{jid!r} is not a person's address (user@domain)", 2)
    checked(play)
    chosen = chosen_account(account)
    make_client = client_factory(chosen)

    async def work() -> None:
        client = make_client()
        recording = record_and_tell_missed(client)
        busy = asyncio.ensure_future(turn_away_busy(client.incoming_calls()))
        try:
            await client.connect()
            saver = await data_saver_for(client, data_saver)
            with contextlib.ExitStack() as stack:
                source, sink = devices(stack, play, record)
                outgoing = await client.call(peer, data_saver=saver.on, source=source, sink=sink,
                                             relay_only=relay_only, ring_timeout=ring_timeout)  # fmt: skip
                await ring_and_talk(chosen, outgoing, saver, duration, ring_timeout)
        finally:
            busy.cancel()
            await client.close()
            recording.cancel()

    run(work)


async def ring_and_talk(account: JID, outgoing: Call, saver: SaverChoice, duration: float | None,
                        ring_timeout: float) -> None:
    """The caller's side: until answered (or not), then the call."""
    from ..client.store import account_dir

    peer = outgoing.peer
    note(f"calling {peer.bare}")
    waiting: list[asyncio.Future[Any]] = [
        asyncio.ensure_future(outgoing.ringing.wait()), asyncio.ensure_future(outgoing.answered.wait()),
    ]  # fmt: skip
    await asyncio.wait([*waiting, asyncio.shield(outgoing.ended)], return_when=asyncio.FIRST_COMPLETED)
    if outgoing.ended.done() and outgoing.ended.result().reason.condition == "timeout":
        fail(f"{peer.bare} did not answer within {ring_timeout:g} s: no device of it is online to ring")
    if outgoing.ringing.is_set() and not outgoing.answered.is_set():
        note("ringing")
    for task in waiting:
        task.cancel()
    await talk(account_dir(account), outgoing, saver, duration, ring_timeout + CONNECT_WAIT)


@click.command()
@account_option
@saver_option
@play_option
@record_option
@duration_option
@relay_option
@click.option("--reject", is_flag=True, help="Decline the call instead.")
@click.option("--wait", "wait_for", type=click.FloatRange(min=0, min_open=True),
              help="Give up when no call comes within this many seconds (default: wait for ever).")  # fmt: skip
def answer(account: str | None, data_saver: bool | None, play: Path | None, record: Path | None,
           duration: float | None, relay_only: bool, reject: bool, wait_for: float | None) -> None:
    """Wait for a call and answer it (or --reject it)."""
    checked(play)
    chosen = chosen_account(account)
    make_client = client_factory(chosen)

    async def work() -> None:
        from ..client.store import account_dir

        client = make_client()
        recording = record_and_tell_missed(client)
        busy: asyncio.Future[None] | None = None
        try:
            calls = client.incoming_calls()
            await client.connect()
            click.echo("waiting for a call", err=True)
            try:
                async with asyncio.timeout(wait_for):
                    incoming = await anext(calls)
            except TimeoutError:
                fail(f"no call within {wait_for:g} s")
            except StopAsyncIteration:
                fail("disconnected while waiting for a call")
            note(f"call from {incoming.caller}")
            if reject:
                await incoming.reject()
                note("rejected")
                return
            busy = asyncio.ensure_future(turn_away_busy(calls))
            saver = await data_saver_for(client, data_saver)
            with contextlib.ExitStack() as stack:
                source, sink = devices(stack, play, record)
                taken = await incoming.answer(data_saver=saver.on, source=source, sink=sink, relay_only=relay_only)
                await talk(account_dir(chosen), taken, saver, duration)
        finally:
            if busy is not None:
                busy.cancel()
            with contextlib.suppress(Exception):
                await client.close()
            recording.cancel()

    run(work)
