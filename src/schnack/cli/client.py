"""The client commands of ``schnack``: login, send, listen, history, contacts.

``schnack login JID`` checks the credentials against the server and stores the account (its
settings in the account's store, the password in the system keyring or a file only its owner may
read); the other commands use the stored account, the only one or the one named by ``--account``
(or $SCHNACK_ACCOUNT). The accounts' directories are under $SCHNACK_CLIENT_DIR, else the
platform's user data directory.

Every failure is one line on stderr and a non-zero exit: 2 for bad usage or a bad address, 1 for
anything else (wrong password, server unreachable, certificate not trusted, no account stored,
a message refused or not acknowledged in time). A command whose standard output is closed by its
reader (``schnack listen | head -1``) ends silently with 141 (128 + SIGPIPE).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import select
import shutil
import signal
import sqlite3
import sys
import warnings
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from ..xmpp.jid import JID, JIDError

if TYPE_CHECKING:
    from ..client import ChatStateChange, Client, Message, Receipt
    from ..client.calls.calls import MissedCall
    from ..client.store import Settings, StoredMessage

# The client library (OMEMO above all) takes a while to import: it is imported by the client
# commands when they run, so that the server's commands start without it.

T = TypeVar("T")

account_option = click.option(
    "--account", "-a", "account", envvar="SCHNACK_ACCOUNT", metavar="JID",
    help="The stored account to use (default: the only one stored).",
)
_MARKS = {
    "pending": "waiting to be sent",
    "sent": "sent",
    "acked": "✓ on the server",
    "delivered": "✓✓ delivered",
    "read": "✓✓ read",
}


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"schnack: {message}", err=True)
    sys.exit(code)


def reader_gone() -> bool:
    """Whether standard output is a pipe whose reader went away (poll reports an error on it),
    rather than a connection that broke: only the former ends a command silently."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _fd, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def stdout_closed() -> NoReturn:
    """The reader of standard output went away (``schnack listen | head -1``): end silently with
    141, the status of a tool that SIGPIPE ends, as the shell reports it."""
    # Python flushes standard output once more on its way out, which would fail and say so.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(141)


def broken_pipe(err: BrokenPipeError) -> NoReturn:
    """A write found its pipe closed: silently 141 if it was standard output's reader that went
    away, else one line and 1, as any other failure."""
    if reader_gone():
        stdout_closed()
    fail(explain(err))


def note(message: str) -> None:
    click.echo(f"schnack: {message}", err=True)


def read_password(from_stdin: bool, *, confirm: bool = False) -> str:
    """The password: the first line of standard input, or asked for on the terminal."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        # getpass rather than click.prompt: click turns both an interrupt and the end of input into
        # the same Abort, and they need different answers. Without a terminal getpass reads
        # standard input and says itself that the input may be echoed; its warning would say it twice.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", getpass.GetPassWarning)
                password = getpass.getpass("Password: ")
                if confirm and getpass.getpass("Repeat for confirmation: ") != password:
                    fail("the two passwords differ", 2)
        except KeyboardInterrupt:
            # The prompt's line is still open.
            click.echo(err=True)
            raise
        except EOFError:
            click.echo(err=True)
            fail("no password given (standard input ended); pass it on standard input with --password-stdin", 2)
    if not password:
        fail("the password must not be empty", 2)
    return password


def explain(err: BaseException) -> str:
    """The one line for an error, naming this command's options where the library names arguments."""
    from ..client import CertificateError, ConnectError, EncryptionRequired

    text = str(err) or type(err).__name__
    if isinstance(err, CertificateError):
        text = text.replace("verify=False", "--insecure").replace("verify=PATH", "--ca FILE")
    elif isinstance(err, ConnectError):
        text = text.replace("try direct_tls=False", "try without --direct-tls").replace("try direct_tls=True", "try --direct-tls")
    if isinstance(err, EncryptionRequired):
        text = text.replace("encrypted=False", "--unencrypted")
    return text


def run(work: Callable[[], Coroutine[Any, Any, T]], failure: str = "") -> T:
    """Run ``work``; what goes wrong ends the command with one line (after ``failure``, if given)."""
    from ..client import ClientError
    from ..client.store import StoreError

    try:
        return asyncio.run(work())
    except BrokenPipeError as err:
        broken_pipe(err)
    except (ClientError, StoreError, OSError, sqlite3.Error) as err:
        fail(failure + explain(err))
    except KeyboardInterrupt:
        fail("interrupted", 130)


def parse_jid(text: str, *, account: bool = False) -> JID:
    try:
        jid = JID.parse(text)
    except JIDError as err:
        fail(f"invalid JID {text!r}: {err}", 2)
    if account and (jid.local is None or jid.resource is not None):
        fail(f"{text!r} is not an account address (user@domain)", 2)
    return jid


def chosen_account(given: str | None) -> JID:
    """The account named, or the only one stored; it must have been stored by ``schnack login``."""
    from ..client.store import FILENAME, account_dir, stored_accounts

    if given is not None:
        account = parse_jid(given, account=True)
        if not (account_dir(account) / FILENAME).is_file():
            fail(f"no such account stored: {account}; log in first with: schnack login {account}")
        return account
    accounts = stored_accounts()
    if not accounts:
        fail("no account stored; log in first with: schnack login JID")
    if len(accounts) > 1:
        fail(f"several accounts are stored ({', '.join(map(str, accounts))}); choose one with --account")
    return accounts[0]


def client_factory(account: JID, **options: Any) -> Callable[[], Client]:
    """Makes clients for a stored account, with its settings and password (checked at once)."""
    from ..client import Client
    from ..client.store import Settings, Store, StoreError, account_dir, load_password

    directory = account_dir(account)
    try:
        store = Store(directory)
        try:
            settings = store.settings() or Settings()
        finally:
            store.close()
    except (StoreError, sqlite3.Error) as err:
        fail(str(err))
    password = load_password(directory, account)
    if password is None:
        fail(f"no password stored for {account}; log in again with: schnack login {account}")

    def make() -> Client:
        return Client(account, password, host=settings.host, port=settings.port, verify=settings.verify,
                      direct_tls=settings.direct_tls, data_dir=directory, **options)

    return make


# login -------------------------------------------------------------------------------------------


def connection_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options that say how to reach the account's server and whether to trust it."""
    for option in reversed((
        click.option("--host", help="Connect to this host instead of looking the domain up in DNS."),
        click.option("--port", type=click.IntRange(1, 65535),
                     help="The port on --host (default 5222, or 5223 with --direct-tls)."),
        click.option("--direct-tls/--starttls", default=None,
                     help="TLS from the first byte, or STARTTLS (default: as DNS says)."),
        click.option("--insecure", is_flag=True, help="Do not check the server's certificate (test servers only)."),
        click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Trust the server's certificate, or its CA, from this PEM file."),
    )):
        command = option(command)
    return command


def connection_settings(host: str | None, port: int | None, direct_tls: bool | None, insecure: bool,
                        ca: Path | None) -> Settings:
    """The settings the connection options chose."""
    from ..client.store import Settings

    if insecure and ca is not None:
        fail("--insecure and --ca exclude each other", 2)
    return Settings(host, port, False if insecure else (ca.resolve() if ca is not None else True), direct_tls)


def sign_in(account: JID, password: str, settings: Settings, *, failure: str = "") -> None:
    """Log in as ``account`` to check the password and settings, then store the account; a
    failure is one line, after ``failure`` if given."""
    from ..client import Client
    from ..client.store import Store, StoreError, account_dir, save_password

    directory = account_dir(account)
    existed = directory.exists()

    async def check() -> JID:
        client = Client(account, password, host=settings.host, port=settings.port, verify=settings.verify,
                        direct_tls=settings.direct_tls, reconnect=False, available=False, data_dir=directory)
        try:
            await client.connect()
            return client.jid
        finally:
            await client.close()

    try:
        bound = run(check, failure)
    except SystemExit:
        if not existed:
            # A failed first login leaves nothing behind.
            shutil.rmtree(directory, ignore_errors=True)
        raise
    try:
        store = Store(directory)
        try:
            store.save_settings(settings)
        finally:
            store.close()
        where = save_password(directory, account, password)
    except (StoreError, OSError, sqlite3.Error) as err:
        fail(f"logged in, but cannot store the account: {err}")
    click.echo(f"logged in as {bound}; account stored in {directory}, password in {where}")


@click.command()
@click.argument("jid")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@connection_options
def login(jid: str, password_stdin: bool, host: str | None, port: int | None, direct_tls: bool | None,
          insecure: bool, ca: Path | None) -> None:
    """Log in as JID and store the account for the other commands."""
    account = parse_jid(jid, account=True)
    settings = connection_settings(host, port, direct_tls, insecure, ca)
    sign_in(account, read_password(password_stdin), settings)


# send --------------------------------------------------------------------------------------------


@click.command()
@click.argument("jid")
@click.argument("text")
@account_option
@click.option("--unencrypted", is_flag=True, help="Send without end-to-end encryption: readable by the servers.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds to wait for the server to acknowledge the message.")
def send(jid: str, text: str, account: str | None, unencrypted: bool, timeout: float) -> None:
    """Send TEXT to JID; exit 0 once the server acknowledged it.

    The message is stored before it is sent and stays in the outbox until the server
    acknowledged it: an interrupted send is completed by the next schnack command, and running the
    same command again sends that same message (the receiver keeps one copy), not a second one.
    """
    peer = parse_jid(jid)
    make_client = client_factory(chosen_account(account), available=False)
    encrypted = not unencrypted

    async def deliver() -> str:
        client = make_client()
        try:
            earlier = client.store.unconfirmed(peer, text, encrypted=encrypted)
            await client.connect()
            if earlier is not None:
                note("sending again the same message that an earlier run could not confirm")
                id = earlier
            else:
                id = await client.send(peer, text, encrypted=encrypted)
            await client.acknowledged(id, timeout=timeout)
            return id
        finally:
            await client.close()

    click.echo(run(deliver))


# listen ------------------------------------------------------------------------------------------


def _local_time(when: datetime) -> str:
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _message_json(message: Message, account: JID, arrived: datetime) -> str:
    from ..client.outbox import message_ids

    origin_id, stanza_id = message_ids(message.element, account)
    error = message.error
    return json.dumps({
        "event": "message",
        "from": str(message.sender),
        "to": str(message.to) if message.to is not None else None,
        "type": message.type,
        "id": message.id,
        "origin_id": origin_id,
        "stanza_id": stanza_id,
        "text": message.text,
        "encrypted": message.encrypted,
        "undecryptable": message.undecryptable,
        "stamp": (message.stamp or arrived).isoformat(),
        "delayed": message.stamp is not None,
        "error": {"condition": error.condition, "type": error.type, "text": error.text} if error else None,
        "replaces": message.replaces,
        "outgoing": message.outgoing,
        "history": message.history,
    }, ensure_ascii=False)


def _message_line(message: Message, arrived: datetime) -> str:
    when = _local_time(message.stamp or arrived)
    sender = f"me → {message.peer}" if message.outgoing else str(message.sender.bare)
    if message.history:
        # Caught up from the server's archive: what this device missed while it was away.
        when += " [earlier]"
    if message.error is not None:
        return f"{when} error from {sender} about message {message.id}: {message.error}"
    if message.text is None:
        return f"{when} {sender}: [could not decrypt: {message.undecryptable}]"
    if message.replaces is not None:
        return f"{when} {sender} corrected {message.replaces}: {message.text}"
    return f"{when} {sender}: {message.text}"


def _receipt_json(receipt: Receipt) -> str:
    return json.dumps({"event": "receipt", "peer": str(receipt.peer), "id": receipt.id, "state": receipt.state,
                       "outgoing": receipt.outgoing}, ensure_ascii=False)


def _missed_json(missed: MissedCall) -> str:
    return json.dumps({"event": "missed_call", "from": str(missed.caller.bare), "id": missed.id,
                       "placed": missed.placed.isoformat(), "reason": missed.reason}, ensure_ascii=False)


def missed_line(missed: MissedCall) -> str:
    from ..client.calls.calls import describe_missed

    return f"{_local_time(missed.placed)} missed call from {missed.caller.bare} ({describe_missed(missed.reason)})"


def _receipt_line(receipt: Receipt) -> str:
    if receipt.outgoing:
        return f"{_local_time(datetime.now(UTC))} me → {receipt.peer}: {receipt.id} [{_MARKS[receipt.state]}]"
    return f"{_local_time(datetime.now(UTC))} {receipt.peer}: {receipt.id} [read here or on another device]"


def _chat_state_json(change: ChatStateChange) -> str:
    return json.dumps({"event": "chat_state", "from": str(change.sender), "state": change.state},
                      ensure_ascii=False)


@click.command()
@account_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, for scripts.")
@click.option("--download", is_flag=True, help="Fetch the files that arrive (decrypted and verified).")
@click.option("--dest", type=click.Path(path_type=Path, file_okay=False),
              help="Where --download keeps files (default: the downloads folder).")
def listen(account: str | None, as_json: bool, download: bool, dest: Path | None) -> None:
    """Print incoming messages as they arrive, until interrupted.

    Also printed: what the contacts' clients say about our messages (delivered, read),
    corrections, what our other devices sent, what the archive had that this device missed
    (marked as earlier), and missed calls (also added to the call history, schnack calls; those
    over before this device first logged in go only there); with --json also the contacts' chat
    states (typing, ...).
    """
    from ..client import Connected, Disconnected

    me = chosen_account(account)
    make_client = client_factory(me)

    async def listening() -> str | None:
        client = make_client()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        gone: list[str] = []

        async def show() -> None:
            async for message in inbox:
                arrived = client.store.now()
                click.echo(_message_json(message, me, arrived) if as_json else _message_line(message, arrived))
                if download:
                    from .files import save_attachment

                    await save_attachment(client, message, dest)

        async def show_receipts() -> None:
            async for receipt in client.receipts():
                click.echo(_receipt_json(receipt) if as_json else _receipt_line(receipt))

        async def show_chat_states() -> None:
            async for change in client.chat_states():
                if as_json:
                    click.echo(_chat_state_json(change))

        async def show_groups() -> None:
            from .groups import group_message_json, group_message_line

            async for said in client.groups.messages():
                arrived = client.store.now()
                click.echo(group_message_json(said, arrived) if as_json else group_message_line(said, arrived))

        async def show_group_events() -> None:
            from .groups import group_event_line

            async for event in client.groups.updates():
                note(group_event_line(event))

        async def show_missed_calls() -> None:
            from .calls import record_missed

            await record_missed(client, lambda missed: click.echo(_missed_json(missed) if as_json else missed_line(missed)))

        async def catching_up() -> None:
            await client.caught_up()
            note("up to date with the server's archive")

        async def watch() -> None:
            async for event in client.events():
                if isinstance(event, Disconnected) and event.reconnecting:
                    note(f"connection lost ({event.reason}); reconnecting")
                elif isinstance(event, Disconnected):
                    gone.append(event.reason)
                elif isinstance(event, Connected):
                    note(f"connected again as {event.jid}")

        try:
            await client.connect()
            note(f"listening as {client.jid}")
            inbox = client.messages()
            # Listening ends on SIGINT or SIGTERM, when the client's feeds end, or when a task
            # that prints fails (its output closed). The note on the catch-up ends by itself.
            ending = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(show()),
                      asyncio.ensure_future(show_receipts()), asyncio.ensure_future(show_chat_states()),
                      asyncio.ensure_future(show_groups()), asyncio.ensure_future(show_group_events()),
                      asyncio.ensure_future(show_missed_calls())]
            tasks = [*ending, asyncio.ensure_future(watch()), asyncio.ensure_future(catching_up())]
            await asyncio.wait(ending, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            await client.close()
        return None if stop.is_set() else (gone[0] if gone else "the connection ended")

    reason = run(listening)
    if reason is not None:
        fail(f"disconnected: {reason}")


# history -----------------------------------------------------------------------------------------


def _history_line(message: StoredMessage) -> str:
    when = _local_time(message.stamp)
    edited = " (edited)" if message.edited is not None else ""
    if message.direction == "in":
        return f"{when} {message.peer}: {message.text}{edited}"
    if message.state == "failed":
        mark = f"✗ failed: {message.error}" + (f" ({message.error_text})" if message.error_text else "")
    else:
        mark = _MARKS[message.state]
    return f"{when} me: {message.text}{edited}  [{mark}]"


@click.command()
@click.argument("jid")
@account_option
@click.option("--limit", type=click.IntRange(min=1), help="Only the last N messages.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def history(jid: str, account: str | None, limit: int | None, as_json: bool) -> None:
    """Show the conversation with JID from the local store (no connection needed)."""
    from ..client.store import Store, StoreError, account_dir

    me = chosen_account(account)
    peer = parse_jid(jid)
    try:
        store = Store(account_dir(me))
        try:
            messages = store.history(peer, limit)
        finally:
            store.close()
    except (StoreError, sqlite3.Error) as err:
        fail(str(err))
    for message in messages:
        if as_json:
            click.echo(json.dumps({
                "peer": str(message.peer), "direction": message.direction, "text": message.text,
                "stamp": message.stamp.isoformat(), "state": message.state, "origin_id": message.origin_id,
                "stanza_id": message.stanza_id, "encrypted": message.encrypted, "error": message.error,
                "id": message.message_id,
                "edited": message.edited.isoformat() if message.edited is not None else None,
            }, ensure_ascii=False))
        else:
            click.echo(_history_line(message))


# contacts ----------------------------------------------------------------------------------------


@click.group(invoke_without_command=True)
@account_option
@click.option("--offline", is_flag=True, help="Show the contact list cached at the last connection.")
@click.pass_context
def contacts(ctx: click.Context, account: str | None, offline: bool) -> None:
    """List the contacts; add or remove one; find them by phone number."""
    from ..client.store import Store, StoreError, account_dir

    ctx.obj = account
    if ctx.invoked_subcommand is not None:
        return
    me = chosen_account(account)
    if offline:
        try:
            store = Store(account_dir(me))
            try:
                listing = store.contacts()
            finally:
                store.close()
        except (StoreError, sqlite3.Error) as err:
            fail(str(err))
    else:
        make_client = client_factory(me, reconnect=False, available=False)

        async def fetch() -> list[Any]:
            client = make_client()
            try:
                await client.connect()
                return await client.roster()
            finally:
                await client.close()

        listing = run(fetch)
    for contact in sorted(listing, key=lambda c: str(c.jid)):
        pending = " (asked to see their presence)" if contact.pending else ""
        click.echo(f"{contact.jid}\t{contact.name or ''}\t{contact.subscription}{pending}")


def with_client(account: str | None, work: Callable[[Client], Coroutine[Any, Any, None]]) -> None:
    """Connect as the account chosen (without announcing presence), do ``work``, and close."""
    make_client = client_factory(chosen_account(account or click.get_current_context().obj),
                                 reconnect=False, available=False)

    async def apply() -> None:
        client = make_client()
        try:
            await client.connect()
            await work(client)
        finally:
            await client.close()

    run(apply)


@contacts.command("add")
@click.argument("jid")
@account_option
@click.option("--name", help="The name to show for the contact.")
def contacts_add(jid: str, account: str | None, name: str | None) -> None:
    """Add JID to the contacts and ask to see their presence."""
    contact = parse_jid(jid).bare

    async def add(client: Client) -> None:
        await client.add_contact(contact, name=name)

    with_client(account, add)
    click.echo(f"added {contact}")


@contacts.command("remove")
@click.argument("jid")
@account_option
def contacts_remove(jid: str, account: str | None) -> None:
    """Remove JID from the contacts (presence subscriptions both ways end too)."""
    from ..client import ClientError

    contact = parse_jid(jid).bare

    async def remove(client: Client) -> None:
        if contact not in {c.jid for c in await client.roster()}:
            raise ClientError(f"{contact} is not in the contact list")
        await client.remove_contact(contact)

    with_client(account, remove)
    click.echo(f"removed {contact}")


COMMANDS = (login, send, listen, history, contacts)
