"""``schnack register`` and ``schnack contacts discover`` as real processes against the real server
with the phone module, whose SMS go to a webhook in this test: the code is read from it and fed
to the command on standard input, as a user types it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from bench.ports import free_port
from schnack.client import Client
from schnack.client.store import account_dir
from schnack.server.app import Server
from schnack.server.modules.phone import DAY, Phone
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads.phone_book import Entry, answer_hash

from ..client.conftest import PASSWORD, make_client, next_of
from ..client.features.test_phone_book import requests_seen
from ..client.phone import api, certificate, next_code, phone_server, sign_up
from ..harness import add_user, running
from ..server.sms_receiver import Webhook
from .proc import PROCESS_WAIT, Result, client_env, login, schnack, start
from .test_client import one_line
from .test_serve_webclient import announced

ANNA = "+4915123456789"
BEN = "+4915123456780"
CARL = "+4915123456781"


def register_args(server: Server, number: str, *extra: str) -> list[str]:
    """``schnack register`` for ``number`` on ``server``, trusting its certificate."""
    host, port = server.bound["c2s"][0]
    return ["register", f"{number}@localhost", "--api", api(server), "--host", host, "--port", str(port),
            "--ca", str(certificate(server)), *extra]


def other(code: str) -> str:
    """A code that is not ``code``."""
    return f"{(int(code) + 1) % 10**6:06d}"


async def register(env: dict[str, str], hook: Webhook, args: list[str],
                   typed: Callable[[str], str] = lambda code: code) -> Result:
    """Run ``schnack register``; once the SMS it asked for arrives, type what ``typed`` makes of
    its code, and the end of input."""
    seen = len(hook.received)
    proc = await start(env, *args)
    sms = asyncio.ensure_future(next_code(hook, seen))
    ended = asyncio.ensure_future(proc.wait())
    await asyncio.wait([sms, ended], timeout=PROCESS_WAIT, return_when=asyncio.FIRST_COMPLETED)
    text = None
    if sms.done():
        text = typed(sms.result()) + "\n"
    else:
        sms.cancel()
    async with asyncio.timeout(PROCESS_WAIT):
        out, err = await proc.communicate(text.encode() if text is not None else None)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


async def test_register_then_log_in_and_send(tmp_path: Path, clients: list[Client]) -> None:
    env = client_env(tmp_path)
    async with phone_server(tmp_path) as (server, hook):
        await add_user(server, "bob", PASSWORD)
        bob = make_client(server, "bob@localhost")
        await bob.connect()
        clients.append(bob)
        inbox = bob.messages()
        result = await register(env, hook, register_args(server, ANNA, "--code-stdin"))
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        made, logged_in = result.stdout.splitlines()
        assert made == f"{ANNA}@localhost: the account is made"
        directory = account_dir(JID.parse(f"{ANNA}@localhost"), tmp_path / "client")
        assert logged_in.startswith(f"logged in as {ANNA}@localhost/")
        assert logged_in.endswith(f"account stored in {directory}, password in {directory / 'password'}")
        sent = await schnack(env, "send", "--unencrypted", "bob@localhost", "hello from my phone number")
        assert sent.returncode == 0, sent.stderr
        message = await next_of(inbox)
        assert (str(message.sender.bare), message.text) == (f"{ANNA}@localhost", "hello from my phone number")


async def test_a_new_phone_and_a_mistyped_code(tmp_path: Path) -> None:
    """Registering a number again (a new phone) gives the account a new password; asked on the
    terminal (here: without --code-stdin), a mistyped code may be typed again."""
    env = client_env(tmp_path)
    async with phone_server(tmp_path, sms_interval=0) as (server, hook):
        await add_user(server, "bob", PASSWORD)
        assert (await register(env, hook, register_args(server, ANNA, "--code-stdin"))).returncode == 0
        directory = account_dir(JID.parse(f"{ANNA}@localhost"), tmp_path / "client")
        first = (directory / "password").read_text()
        again = await register(env, hook, register_args(server, ANNA), lambda code: f"{other(code)}\n{code[:3]} {code[3:]}")
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines()[0] == (f"{ANNA}@localhost: the number is verified; the account's other"
                                                " devices are logged out")
        assert again.stderr == (f"schnack: a code is on its way to {ANNA} by SMS\nCode from the SMS: "
                                "schnack: wrong code; try again\nCode from the SMS: ")
        assert (directory / "password").read_text() != first
        sent = await schnack(env, "send", "--unencrypted", "bob@localhost", "new phone, same number")
        assert sent.returncode == 0, sent.stderr


async def test_register_refusals_are_one_line(tmp_path: Path) -> None:
    env = client_env(tmp_path)
    async with phone_server(tmp_path) as (server, hook):
        not_a_number = await schnack(env, *register_args(server, "anna"))
        assert not_a_number.returncode == 2
        assert one_line(not_a_number) == ("schnack: anna@localhost is not named by a phone number: write the number"
                                          " in E.164 form, as in +4915123456789@localhost")
        wrong = await register(env, hook, register_args(server, ANNA, "--code-stdin"), other)
        assert one_line(wrong) == "schnack: wrong code"
        again = await register(env, hook, register_args(server, ANNA, "--code-stdin"))
        assert again.returncode == 1
        assert one_line(again).startswith(f"schnack: too many codes asked for {ANNA}: try again in ")
        typo = await register(env, hook, register_args(server, BEN, "--code-stdin"), lambda _code: "12345")
        assert typo.returncode == 2 and one_line(typo) == "schnack: the code is the 6 digits the SMS carries"
        # A code that has expired by then (or was used) is refused as such.
        expired = await register_with_an_expired_code(env, server, hook, CARL)
        assert one_line(expired) == (f"schnack: the code has expired, was used, or was never sent to {CARL}:"
                                  " ask for a new one")
        # Nothing was stored by these.
        assert one_line(await schnack(env, "contacts")) == "schnack: no account stored; log in first with: schnack login JID"
    async with running(tmp_path / "off", listen=True) as off:
        host, port = off.bound["c2s"][0]
        without = await schnack(env, "register", f"{ANNA}@localhost", "--api", api(off), "--insecure",
                                "--host", host, "--port", str(port))
        assert one_line(without) == (f"schnack: {api(off)} does not sign up phone numbers (HTTP 404): the server's"
                                     " phone module is off, or the API is elsewhere")


async def register_with_an_expired_code(env: dict[str, str], server: Server, hook: Webhook, number: str) -> Result:
    """Run ``schnack register`` for ``number`` and give it the code of its SMS after the server
    forgot that code, as its sweep does once the code expired (run here as if a day later)."""
    seen = len(hook.received)
    proc = await start(env, *register_args(server, number, "--code-stdin"))
    code = await next_code(hook, seen)
    phone = server.modules["phone"]
    assert isinstance(phone, Phone)
    assert await phone.sweep(time.time() + DAY) >= 1
    async with asyncio.timeout(PROCESS_WAIT):
        out, err = await proc.communicate(f"{code}\n".encode())
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


async def test_a_failed_login_after_the_sign_up_says_so(tmp_path: Path) -> None:
    env = client_env(tmp_path)
    async with phone_server(tmp_path) as (server, hook):
        closed = free_port()
        args = register_args(server, ANNA, "--code-stdin")
        args[args.index("--port") + 1] = str(closed)
        failed = await register(env, hook, args)
        assert one_line(failed) == (
            "schnack: the number has a new password, but logging in with it failed (run schnack register again"
            f" with other connection options): cannot reach localhost (127.0.0.1 port {closed}): connection refused")
        assert failed.stdout == f"{ANNA}@localhost: the account is made\n"
        assert not account_dir(JID.parse(f"{ANNA}@localhost"), tmp_path / "client").exists()


VCARDS = """BEGIN:VCARD
VERSION:3.0
FN:Ben Example
TEL;TYPE=cell:0151 2345 6780
END:VCARD
BEGIN:VCARD
VERSION:3.0
FN:Voicemail
TEL:3311
END:VCARD
BEGIN:VCARD
VERSION:3.0
FN:Carl
item1.TEL;type=CELL:+49 151 234567
 81
END:VCARD
"""


async def test_discover_and_add(tmp_path: Path) -> None:
    env = client_env(tmp_path)
    book = tmp_path / "contacts.vcf"
    book.write_text(VCARDS)
    async with phone_server(tmp_path) as (server, hook):
        assert (await register(env, hook, register_args(server, ANNA, "--code-stdin"))).returncode == 0
        await sign_up(server, hook, BEN)
        seen = requests_seen(server)
        # National forms are read for the country of the account's own number.
        found = await schnack(env, "contacts", "discover", "--file", str(book), "--add")
        assert found.returncode == 0, found.stderr
        assert found.stdout == f"{BEN}  {BEN}@localhost  Ben Example\n"
        assert found.stderr.splitlines() == [
            f"schnack: skipped 1 entry of {book} that are not phone numbers (line 9: '3311' is not a valid phone number)",
            f"schnack: accounts found for 1 of 2 numbers; added to the contacts: {BEN}@localhost",
        ]
        listing = await schnack(env, "contacts")
        assert listing.stdout == f"{BEN}@localhost\tBen Example\tnone (asked to see their presence)\n"
        # Asked again, the client sends the ver of the answer it kept; a contact is not added twice.
        ver = answer_hash([Entry(BEN, (JID.parse(f"{BEN}@localhost"),))])
        again = await schnack(env, "contacts", "discover", "--json", "--add", "--file", str(book))
        assert again.returncode == 0, again.stderr
        assert [json.loads(line) for line in again.stdout.splitlines()] == [
            {"number": BEN, "jid": f"{BEN}@localhost", "name": "Ben Example"}]
        assert again.stderr.splitlines()[-1] == "schnack: accounts found for 1 of 2 numbers"
        assert seen == [None, ver]
        numbers = await schnack(env, "contacts", "discover", "015123456780", f"{CARL[:3]} {CARL[3:]}")
        assert numbers.stdout == f"{BEN}  {BEN}@localhost\n"


async def test_discover_refusals_are_one_line(tmp_path: Path) -> None:
    env = client_env(tmp_path)
    async with phone_server(tmp_path) as (server, _hook):
        await add_user(server, "alice", PASSWORD)
        assert (await login(server, env, "alice@localhost", PASSWORD)).returncode == 0
        nothing = await schnack(env, "contacts", "discover")
        assert nothing.returncode == 2
        assert one_line(nothing) == "schnack: name the numbers, or an address book with --file"
        national = await schnack(env, "contacts", "discover", "0151 23456789")
        assert national.returncode == 2
        assert one_line(national) == ("schnack: '0151 23456789' has no country code, and alice@localhost is no phone"
                                      " number to take the country from: give it with --region, such as --region DE")
        unknown = await schnack(env, "contacts", "discover", "0151 23456789", "--region", "XX")
        assert unknown.returncode == 2
        assert one_line(unknown) == ("schnack: unknown region 'XX': give a country's two-letter code (ISO 3166),"
                                     " such as DE")
        invalid = await schnack(env, "contacts", "discover", "+49 12")
        assert invalid.returncode == 2 and one_line(invalid) == "schnack: '+49 12' is not a valid phone number"
        missing = await schnack(env, "contacts", "discover", "--file", str(tmp_path / "none.vcf"))
        assert missing.returncode == 2
        assert one_line(missing) == f"schnack: cannot read {tmp_path / 'none.vcf'}: No such file or directory"
        asked = await schnack(env, "contacts", "discover", "0151 23456789", "--region", "de")
        assert (asked.returncode, asked.stdout) == (0, "")


def test_serve_names_where_phones_sign_up(tmp_path: Path) -> None:
    """The start-up summary names the sign-up API and how codes go out, only with the module on."""
    without = announced(tmp_path / "off")
    assert "phone sign-up" not in without
    on = announced(tmp_path / "on", '[modules]\nenable = ["phone"]\n[modules.phone]\nsms = "log"\n')
    (line,) = [line for line in on.splitlines() if "phone sign-up" in line]
    assert line.split()[2].startswith("https://example.test:") and line.split()[2].endswith("/phone")
    assert "(accounts at example.test; codes sent in this log, for trying out)" in line
