"""``schnack admin check``: the compliance run against a deployment, as a table or as JSON.

Two test accounts log in as an app would and every check of client/compliance runs; the table
names each check's specification, its result and the reason. The passwords come from files
(``--password-file``, ``--password2-file``) or from $SCHNACK_PASSWORD and $SCHNACK_PASSWORD2,
never from the command line, where other users of the machine could read them.

Exit status: 0 when every check that ran passed, 1 when one failed, 2 when the accounts cannot
log in (server unreachable, certificate not trusted, wrong password) or the usage is wrong.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from ..xmpp.jid import JID, JIDError

if TYPE_CHECKING:
    from ..client.compliance import Check, Result

_LABELS = {"passed": "PASSED", "failed": "FAILED", "skipped": "SKIPPED"}


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"schnack: {message}", err=True)
    sys.exit(code)


def _account(text: str, option: str) -> JID:
    try:
        jid = JID.parse(text)
    except JIDError as err:
        _fail(f"{option}: invalid JID {text!r}: {err}")
    if jid.local is None or jid.resource is not None:
        _fail(f"{option}: {text!r} is not an account address (user@domain)")
    return jid


def _password(path: Path | None, variable: str, option: str) -> str:
    if path is not None:
        try:
            password = path.read_text().split("\n", 1)[0].rstrip("\r")
        except (OSError, UnicodeDecodeError) as err:
            _fail(f"{option}: cannot read {path}: {err}")
    else:
        password = os.environ.get(variable, "")
        if not password:
            _fail(f"give the password with {option} FILE or in ${variable}")
    if not password:
        _fail(f"{option}: {path} holds an empty password")
    return password


def _address(text: str | None, option: str) -> tuple[str, int] | None:
    if text is None:
        return None
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        _fail(f"{option}: expected HOST:PORT, got {text!r}")
    return host, int(port)


def _table(results: list[tuple[Check, Result]]) -> str:
    spec_width = max(len(check.spec) for check, _ in results)
    name_width = max(len(check.name) for check, _ in results)
    lines = [f"{'SPECIFICATION':<{spec_width}}  {'CHECK':<{name_width}}  {'RESULT':<7}  REASON"]
    for check, result in results:
        lines.append(f"{check.spec:<{spec_width}}  {check.name:<{name_width}}  "
                     f"{_LABELS[result.status]:<7}  {result.reason}".rstrip())
        if result.sent:
            lines.append(f"{'':<{spec_width}}  sent:     {result.sent}")
        if result.received:
            lines.append(f"{'':<{spec_width}}  received: {result.received}")
    return "\n".join(lines)


def _summary(results: list[tuple[Check, Result]]) -> dict[str, int]:
    return {status: sum(1 for _, r in results if r.status == status) for status in _LABELS}


@click.command("check")
@click.option("--jid", "jid", required=True, metavar="JID", help="The first test account.")
@click.option("--password-file", type=click.Path(path_type=Path, dir_okay=False),
              help="A file whose first line is the first account's password (default: $SCHNACK_PASSWORD).")
@click.option("--jid2", "jid2", required=True, metavar="JID", help="The second test account (same server).")
@click.option("--password2-file", type=click.Path(path_type=Path, dir_okay=False),
              help="A file whose first line is the second account's password (default: $SCHNACK_PASSWORD2).")
@click.option("--server", metavar="HOST:PORT", help="Connect here (STARTTLS) instead of looking the domain up in DNS.")
@click.option("--direct-tls", metavar="HOST:PORT",
              help="The direct TLS listener to check when DNS has no _xmpps-client._tcp record "
                   "(default: port 5223 of --server's host, or of the domain).")
@click.option("--insecure-tls", "--insecure", "insecure", is_flag=True,
              help="Do not check the server's certificate (test servers only).")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Trust the server's certificate, or its CA, from this PEM file.")
@click.option("--timeout", type=click.FloatRange(1, 300), default=10.0, show_default=True,
              help="Seconds to wait for each answer.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def check(jid: str, password_file: Path | None, jid2: str, password2_file: Path | None, server: str | None,
          direct_tls: str | None, insecure: bool, ca: Path | None, timeout: float, as_json: bool) -> None:
    """Check a deployment as XMPP apps need it (the checks of Conversations' compliance tester
    and more), logged in with two test accounts."""
    from ..client.compliance import Account, Settings, run
    from ..client.errors import ClientError

    if insecure and ca is not None:
        _fail("--insecure-tls and --ca exclude each other")
    first, second = _account(jid, "--jid"), _account(jid2, "--jid2")
    if first == second:
        _fail("--jid and --jid2 must be two different accounts")
    settings = Settings(
        Account(first, _password(password_file, "SCHNACK_PASSWORD", "--password-file")),
        Account(second, _password(password2_file, "SCHNACK_PASSWORD2", "--password2-file")),
        server=_address(server, "--server"), direct_tls=_address(direct_tls, "--direct-tls"),
        verify=False if insecure else (ca.resolve() if ca is not None else True), timeout=timeout,
        check_timeout=max(60.0, 4 * timeout),
    )
    try:
        results = asyncio.run(run(settings))
    except ClientError as err:
        text = str(err).replace("verify=False", "--insecure-tls").replace("verify=PATH", "--ca FILE")
        _fail(f"cannot log in: {text}")
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    counts = _summary(results)
    if as_json:
        click.echo(json.dumps({
            "domain": first.domain,
            "checks": [{"spec": c.spec, "name": c.name, "status": r.status, "reason": r.reason,
                        "sent": r.sent, "received": r.received} for c, r in results],
            **counts,
        }, indent=2))
    else:
        click.echo(_table(results))
        click.echo(f"\n{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    sys.exit(1 if counts["failed"] else 0)
