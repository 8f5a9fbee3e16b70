"""Phone-number accounts from the command line: ``schnack register``.

``schnack register +4915123456789@example.org`` signs the number up by SMS through the server's
HTTP API (Quicksy's, client/phone_signup.py), with a random password the user never sees, then
logs in and stores the account as ``schnack login`` does. Failures are one line and a non-zero
exit, as for the other client commands (client.py).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import click

from ..xmpp.phone import is_e164
from .client import connection_options, connection_settings, fail, note, parse_jid, run, sign_in

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
