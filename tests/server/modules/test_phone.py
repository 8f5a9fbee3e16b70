"""The phone module in memory: where discovery answers and where it does not, what the
configuration must name, the forms of the Authorization header, and a code voided while the
next one is sent (docs/phone.md)."""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from pathlib import Path

import pytest

from schnack.server.app import Server
from schnack.server.config import ConfigError
from schnack.server.modules.phone import Phone, _Refused, parse_authorization
from schnack.xmpp.errors import StanzaError
from schnack.xmpp.jid import JID
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.phone_book import Entry, PhoneBook
from schnack.xmpp.stanza import Stanza
from schnack.xmpp.xml import serialize

from ...harness import add_user, connect, make_config, running
from .test_register import condition

PHONE = {"enable": ["phone"], "phone": {"sms": "log"}}
BOOK = serialize(PhoneBook((Entry("+4915123456789"),)).to_xml())


async def test_discovery_to_another_domain_of_the_server_is_forbidden(tmp_path: Path) -> None:
    async with running(tmp_path, domains=["localhost", "other.test"], modules=PHONE) as server:
        await add_user(server, "alice")
        alice = await connect(server, "alice@localhost/phone")
        await alice.send(f"<iq type='get' id='b1' to='other.test'>{BOOK}</iq>")
        (reply,) = alice.take()
        assert condition(reply) == "forbidden"
        await alice.send(f"<iq type='get' id='b2' to='localhost'>{BOOK}</iq>")
        (reply,) = alice.take()
        assert reply.get("type") == "result"


async def test_discovery_for_another_server_is_not_authorized(tmp_path: Path) -> None:
    async with running(tmp_path, modules=PHONE) as server:
        module = server.modules["phone"]
        assert isinstance(module, Phone)
        el = parse_frame(f"<iq xmlns='jabber:client' type='get' id='b1' to='localhost' from='eve@elsewhere.example/x'>"
                         f"{BOOK}</iq>".encode(), 10**6)
        with pytest.raises(StanzaError) as err:
            await module.phone_book(Stanza(el, JID.parse("localhost"), JID.parse("eve@elsewhere.example/x")), None)
        assert err.value.condition == "not-authorized"


@pytest.mark.parametrize(("options", "key", "text"), [
    ({}, "modules.phone.sms", "choose how codes are sent: one of log, http, command"),
    ({"sms": "http"}, "modules.phone.sms_url", "needs an http:// or https:// URL"),
    ({"sms": "http", "sms_url": "ftp://relay"}, "modules.phone.sms_url", "needs an http:// or https:// URL"),
    ({"sms": "command"}, "modules.phone.sms_command", "needs the program and its arguments"),
    ({"sms": "log", "sms_text": "your code"}, "modules.phone.sms_text", "must contain {code}"),
    ({"sms": "log", "host": "elsewhere.test"}, "modules.phone.host", "is not one of the server's domains"),
])
def test_the_configuration_must_name_a_working_gateway(tmp_path: Path, options: dict[str, object], key: str,
                                                       text: str) -> None:
    with pytest.raises(ConfigError) as err:
        Server(make_config(tmp_path, modules={"enable": ["phone"], "phone": options}))
    assert err.value.key == key and text in str(err.value)


def test_the_accounts_live_on_the_first_domain_unless_named(tmp_path: Path) -> None:
    first = Server(make_config(tmp_path, domains=["a.test", "b.test"], modules=PHONE)).modules["phone"]
    named = Server(make_config(tmp_path, domains=["a.test", "b.test"],
                               modules={"enable": ["phone"], "phone": {"sms": "log", "host": "b.test"}})).modules["phone"]
    assert isinstance(first, Phone) and isinstance(named, Phone)
    assert (first.host, named.host) == ("a.test", "b.test")


@pytest.mark.parametrize("header", [
    base64.b64encode(b"+4915123456789\x00123456").decode(),
    # As SASL PLAIN writes it, with an empty authorization identity first.
    base64.b64encode(b"\x00+4915123456789\x00123456").decode(),
    "Basic " + base64.b64encode(b"+4915123456789:123456").decode(),
    "basic " + base64.b64encode(b"+4915123456789:123456").decode(),
])
def test_the_forms_of_the_authorization_header(header: str) -> None:
    assert parse_authorization(header) == ("+4915123456789", "123456")


async def test_a_new_code_survives_the_voiding_of_the_one_before(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """A number's code is voided by its last wrong try while a new code for the number is being
    sent: the new code stays. The try reads the code, and deletes it some storage trips later;
    the new code is written in between when the try starts so many trips after the request for
    it (SQLite runs the trips of both in turn, in the order they were issued), for one of the
    offsets tried here."""
    options = {"sms": "log", "sms_interval": 0, "code_attempts": 1}
    async with running(tmp_path, modules={"enable": ["phone"], "phone": options}) as server:
        module = server.modules["phone"]
        assert isinstance(module, Phone)
        kv = server.storage.kv
        for offset in range(20):
            number, app = f"+49151234{offset:05d}", str(uuid.uuid4())
            await module.send_code(number, f"192.0.2.{offset}", app)
            (sent,) = [record.getMessage() for record in caplog.records if f"SMS to {number} " in record.getMessage()]
            found = re.search(r": ([0-9]{6}) is your code", sent)
            assert found is not None, sent
            wrong = f"{(int(found[1]) + 1) % 1_000_000:06d}"

            async def last_wrong_try(number: str = number, app: str = app, wrong: str = wrong, offset: int = offset) -> None:
                for _ in range(offset):
                    await kv.get("localhost", "", "phone-code/+0")
                with pytest.raises(_Refused) as refused:
                    await module.verify(number, wrong, "a long random password", app)
                # 404 when the try came late enough to read the new code, which it may not try.
                assert refused.value.status in (404, 429)

            await asyncio.gather(module.send_code(number, f"198.51.100.{offset}", str(uuid.uuid4())), last_wrong_try())
            assert await kv.get("localhost", "", f"phone-code/{number}") is not None, offset
