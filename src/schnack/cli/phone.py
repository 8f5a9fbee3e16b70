"""Phone-number accounts from the command line: ``schnack register`` and ``schnack contacts discover``.

``schnack register +4915123456789@example.org`` signs the number up by SMS through the server's
HTTP API (Quicksy's, client/phone_signup.py), with a random password the user never sees, then
logs in and stores the account as ``schnack login`` does. ``schnack contacts discover`` asks the
account's server which numbers of an address book have accounts (client/features/phone_book.py)
and can add them to the contacts. Failures are one line and a non-zero exit, as for the other
client commands (client.py).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..xmpp.jid import JID
from ..xmpp.phone import is_e164, region_of
from .client import (
    account_option,
    chosen_account,
    connection_options,
    connection_settings,
    contacts,
    fail,
    note,
    parse_jid,
    run,
    sign_in,
    with_client,
)

if TYPE_CHECKING:
    from ..client import Client

_CODE = re.compile(r"[0-9]{6}")


# register ----------------------------------------------------------------------------------------


@click.command()
@click.argument("jid")
@click.option("--api", metavar="URL", help="The server's sign-up API (default: https://DOMAIN:5281/phone).")
@click.option("--code-stdin", is_flag=True, help="Read the code from standard input instead of asking for it.")
@connection_options
def register(jid: str, api: str | None, code_stdin: bool, host: str | None, port: int | None,
             direct_tls: bool | None, insecure: bool, ca: Path | None) -> None:
    """Sign up the phone number JID (+4915123456789@example.org) with a code sent by SMS.

    Also for a number signed up before (a new phone): the account gets a new password, and its
    other devices are logged out. The password is made here and stored; nobody needs to know it.
    """
    from ..client.phone_signup import PhoneSignup, WrongCode, default_api, new_password

    account = parse_jid(jid, account=True)
    assert account.local is not None
    if not is_e164(account.local):
        fail(f"{account} is not named by a phone number: write the number in E.164 form, as in"
             f" +4915123456789@{account.domain}", 2)
    settings = connection_settings(host, port, direct_tls, insecure, ca)
    signup = PhoneSignup(api or default_api(account.domain), account.local, verify=settings.verify,
                         language=_language())
    run(signup.request_code)
    if not code_stdin:
        note(f"a code is on its way to {account.local} by SMS")
    password = new_password()
    created: bool | None = None
    while created is None:
        code = _read_code(code_stdin)

        async def prove(code: str = code) -> bool | None:
            try:
                return await signup.set_password(code, password)
            except WrongCode:
                # Asked on the terminal, a mistyped code may be typed again (the server allows a few).
                if code_stdin:
                    raise
                return None

        created = run(prove)
        if created is None:
            note("wrong code; try again")
    click.echo(f"{account}: " + ("the account is made" if created
                                 else "the number is verified; the account's other devices are logged out"))
    sign_in(account, password, settings,
            failure="the number has a new password, but logging in with it failed (run schnack register"
                    " again with other connection options): ")


def _read_code(from_stdin: bool) -> str:
    """The code from the SMS: the next line of standard input, asked for unless ``from_stdin``."""
    if not from_stdin:
        click.echo("Code from the SMS: ", nl=False, err=True)
    try:
        line = sys.stdin.readline()
    except KeyboardInterrupt:
        if not from_stdin:
            # The prompt's line is still open.
            click.echo(err=True)
        raise
    if not line:
        if not from_stdin:
            click.echo(err=True)
        fail("no code given (standard input ended)", 2)
    code = "".join(line.split())
    if _CODE.fullmatch(code) is None:
        fail("the code is the 6 digits the SMS carries", 2)
    return code


def _language() -> str | None:
    """The user's language as a language tag (de-DE), for the SMS text, as the locale says it."""
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(variable)
        if value:
            tag = value.partition(".")[0].partition("@")[0]
            return None if tag in ("C", "POSIX") else tag.replace("_", "-")
    return None


# contacts discover -------------------------------------------------------------------------------


@contacts.command("discover")
@click.argument("numbers", nargs=-1)
@click.option("--file", "path", type=click.Path(path_type=Path, dir_okay=False),
              help="An address book: a vCard file (.vcf) or text with one number[,name] per line.")
@click.option("--region", metavar="XX",
              help="The country national numbers are written for, such as DE (default: the account's own).")
@click.option("--add", is_flag=True, help="Add the accounts found to the contacts, named as in the address book.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@account_option
def contacts_discover(numbers: tuple[str, ...], path: Path | None, region: str | None, add: bool,
                      as_json: bool, account: str | None) -> None:
    """Find which phone numbers have accounts on the account's server.

    NUMBERS may be written in any form; without a country code they are read for --region.
    """
    from ..client.address_book import AddressBookError, Card, known_region, needs_region, read, resolve
    from ..xmpp.phone import PhoneNumberError, normalize

    me = chosen_account(account or click.get_current_context().obj)
    if not numbers and path is None:
        fail("name the numbers, or an address book with --file", 2)
    if region is not None and not known_region(region):
        fail(f"unknown region {region!r}: give a country's two-letter code (ISO 3166), such as DE", 2)
    region = region or (region_of(me.local) if me.local is not None and is_e164(me.local) else None)
    try:
        cards = [Card(number, None, 0) for number in numbers] + (read(path) if path is not None else [])
    except AddressBookError as err:
        fail(str(err), 2)
    national = next((card.number for card in cards if needs_region(card.number)), None)
    if region is None and national is not None:
        fail(f"{national!r} has no country code, and {me} is no phone number to take the country from:"
             " give it with --region, such as --region DE", 2)
    for number in numbers:
        try:
            normalize(number, region)
        except PhoneNumberError as err:
            fail(str(err), 2)
    book = resolve(cards, region)
    if book.skipped:
        card, reason = book.skipped[0]
        entries = "1 entry" if len(book.skipped) == 1 else f"{len(book.skipped)} entries"
        note(f"skipped {entries} of {path} that are not phone numbers (line {card.line}: {reason})")
    if not book.names:
        fail(f"{path} holds no phone numbers")
    found: dict[str, tuple[JID, ...]] = {}
    added: list[JID] = []

    async def discover(client: Client) -> None:
        found.update(await client.discover(book.names))
        if add:
            known = {contact.jid for contact in await client.roster()}
            for number, jids in sorted(found.items()):
                for jid in jids:
                    if jid not in known and jid != me:
                        await client.add_contact(jid, name=book.names[number])
                        added.append(jid)

    with_client(account, discover)
    for number, jids in sorted(found.items()):
        for jid in jids:
            name = book.names.get(number)
            if as_json:
                click.echo(json.dumps({"number": number, "jid": str(jid), "name": name}, ensure_ascii=False))
            else:
                click.echo(f"{number}  {jid}  {name or ''}".rstrip())
    note(f"accounts found for {len(found)} of {len(book.names)} numbers"
         + (f"; added to the contacts: {', '.join(map(str, added))}" if added else ""))

