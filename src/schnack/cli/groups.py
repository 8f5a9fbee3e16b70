"""``schnack group``: private groups encrypted end to end (XEP-0045 rooms with OMEMO, XEP-0384).

``create NAME [MEMBER...]`` makes a private group and invites the members, ``invite``, ``remove``,
``leave``, ``members`` and ``send`` act on one group, named by its address or by its name: a name
this device does not know is looked up, once connected, in the account's bookmarks (XEP-0402),
which hold the groups of its other devices. ``list`` shows the account's groups from the local
store. Messages are encrypted to every member's devices unless ``--unencrypted`` is given (for a
public channel, made with ``create --channel``); ``schnack listen`` shows what arrives in the
groups. Every failure is one line on stderr and a non-zero exit, as for the other client commands.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..xmpp.jid import JID, JIDError
from .client import account_option, chosen_account, client_factory, fail, parse_jid, run

if TYPE_CHECKING:
    from ..client import Client
    from ..client.features.groups import Group, GroupEvent, GroupMessage

T = TypeVar("T")


def _with_client(account: str | None, work: Callable[[Client], Coroutine[Any, Any, T]]) -> T:
    """Connect the stored account (without announcing presence), do ``work``, close."""
    make_client = client_factory(chosen_account(account), reconnect=False, available=False)

    async def session() -> T:
        client = make_client()
        try:
            await client.connect()
            return await work(client)
        finally:
            await client.close()

    return run(session)


def _stored(account: JID) -> list[Group]:
    """The account's groups as the local store has them."""
    from ..client.features.groups import GroupError, stored_groups
    from ..client.store import Store, StoreError, account_dir

    try:
        store = Store(account_dir(account))
        try:
            return stored_groups(store)
        finally:
            store.close()
    except (StoreError, GroupError, sqlite3.Error) as err:
        fail(str(err))


def _with_group(account: str | None, group_name: str, work: Callable[[Client, str], Coroutine[Any, Any, T]]) -> T:
    """As :func:`_with_client`, ``work`` getting the group that GROUP names: an address of a
    group (with a local part), else a group's name, which may be known only to the account's
    bookmarks and so only once connected."""

    async def on_group(client: Client) -> T:
        try:
            local = JID.parse(group_name).local
        except JIDError:
            local = None
        group = group_name if local is not None else str((await client.groups.named(group_name)).jid)
        return await work(client, group)

    return _with_client(account, on_group)


def _members(texts: tuple[str, ...]) -> list[str]:
    return [str(parse_jid(text, account=True)) for text in texts]


def key_warnings(members: tuple[tuple[Any, str], ...]) -> None:
    """The members whose OMEMO keys the others cannot fetch, as the group service reports them
    on adding members (``no-keys`` or ``hidden-keys``)."""
    for jid, problem in members:
        why = "has published no OMEMO keys" if problem == "no-keys" else "hides its OMEMO keys from the other members"
        click.echo(f"schnack: warning: {jid} {why}; it cannot read encrypted messages in this group yet", err=True)


@click.group("group")
def group() -> None:
    """Private groups, encrypted end to end: create, invite, send, leave."""


@group.command("create")
@click.argument("name")
@click.argument("members", nargs=-1)
@account_option
@click.option("--channel", is_flag=True, help="A public channel instead: open to anyone, not encrypted.")
def create(name: str, members: tuple[str, ...], account: str | None, channel: bool) -> None:
    """Create the private group NAME and invite MEMBERS; print its address."""
    invitees = _members(members)
    if not name.strip():
        fail("a group needs a name", 2)

    async def work(client: Client) -> str:
        made = await client.groups.create(name, encrypted=not channel)
        if invitees:
            key_warnings((await client.groups.invite(made.jid, invitees)).members)
        return str(made.jid)

    click.echo(_with_client(account, work))


@group.command("invite")
@click.argument("group_name", metavar="GROUP")
@click.argument("members", nargs=-1, required=True)
@account_option
def invite(group_name: str, members: tuple[str, ...], account: str | None) -> None:
    """Invite MEMBERS to GROUP: they become members and can read what is sent from now on."""
    invitees = _members(members)

    async def work(client: Client, group: str) -> None:
        key_warnings((await client.groups.invite(group, invitees)).members)

    _with_group(account, group_name, work)
    click.echo(f"invited {', '.join(invitees)}")


@group.command("remove")
@click.argument("group_name", metavar="GROUP")
@click.argument("member")
@account_option
def remove(group_name: str, member: str, account: str | None) -> None:
    """Take MEMBER out of GROUP (admins and owners): nothing more reaches them."""
    jid = _members((member,))[0]

    async def work(client: Client, group: str) -> None:
        await client.groups.remove(group, jid)

    _with_group(account, group_name, work)
    click.echo(f"removed {jid}")


@group.command("leave")
@click.argument("group_name", metavar="GROUP")
@account_option
def leave(group_name: str, account: str | None) -> None:
    """Leave GROUP and forget it on every device of the account."""

    async def work(client: Client, group: str) -> None:
        await client.groups.leave(group)

    _with_group(account, group_name, work)
    click.echo(f"left {group_name}")


@group.command("members")
@click.argument("group_name", metavar="GROUP")
@account_option
def members(group_name: str, account: str | None) -> None:
    """List the members of GROUP with their affiliation."""

    async def work(client: Client, group: str) -> list[Any]:
        return await client.groups.members(group)

    for member in _with_group(account, group_name, work):
        click.echo(f"{member.jid}\t{member.affiliation}")


@group.command("send")
@click.argument("group_name", metavar="GROUP")
@click.argument("text")
@account_option
@click.option("--unencrypted", is_flag=True, help="Send without end-to-end encryption (public channels).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds to wait for the server to acknowledge the message.")
def send(group_name: str, text: str, account: str | None, unencrypted: bool, timeout: float) -> None:
    """Send TEXT to GROUP, encrypted to every member's devices; exit 0 once the server has it."""

    async def work(client: Client, group: str) -> str:
        id = await client.groups.send(group, text, encrypted=not unencrypted)
        await client.acknowledged(id, timeout=timeout)
        return id

    click.echo(_with_group(account, group_name, work))


@group.command("list")
@account_option
def listing(account: str | None) -> None:
    """List the account's groups (from the local store, no connection needed)."""
    for each in _stored(chosen_account(account)):
        kind = "private" if each.private else "channel"
        click.echo(f"{each.jid}\t{each.name or ''}\t{kind}")


# What schnack listen shows of groups -------------------------------------------------------------


def group_message_line(message: GroupMessage, arrived: datetime) -> str:
    when = (message.stamp or arrived).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    if message.history:
        when += " [earlier]"
    who = str(message.sender) if message.sender is not None else (message.nick or "?")
    text = message.text if message.text is not None else f"[could not decrypt: {message.undecryptable}]"
    return f"{when} [{message.group}] {who}: {text}"


def group_message_json(message: GroupMessage, arrived: datetime) -> str:
    return json.dumps({
        "event": "group_message", "group": str(message.group), "nick": message.nick,
        "from": str(message.sender) if message.sender is not None else None, "id": message.id,
        "stanza_id": message.stanza_id, "text": message.text, "encrypted": message.encrypted,
        "undecryptable": message.undecryptable, "stamp": (message.stamp or arrived).isoformat(),
        "outgoing": message.outgoing, "history": message.history,
    }, ensure_ascii=False)


def group_event_line(event: GroupEvent) -> str:
    from ..client.features.groups import Invited, Removed

    if isinstance(event, Invited):
        return f"added to the group {event.group} by {event.inviter or 'someone'}"
    if isinstance(event, Removed):
        why = {307: "kicked", 301: "banned", 321: "removed", 322: "removed"}.get(event.status or 0, "destroyed")
        return f"out of the group {event.group} ({why}{': ' + event.reason if event.reason else ''})"
    names = ", ".join(str(jid) for jid, _ in event.members)
    return f"in the group {event.group}, these members cannot read encrypted messages yet: {names}"
