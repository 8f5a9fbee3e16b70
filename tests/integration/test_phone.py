"""Phone-number accounts on real sockets (docs/phone.md): codes asked for and checked over HTTP
with aiohttp, sent through the real gateways (a webhook on a local port that keeps what it got,
a program that writes to a file), then slixmpp logging in as +number@localhost; the limits, the
wrong, expired and void codes, a new phone re-keying the account, and two nodes on one
PostgreSQL checking each other's codes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import logging
import re
import secrets
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import aiohttp
import asyncpg
import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError

from schnack.server import sasl2
from schnack.server.app import Server
from schnack.server.modules import phone
from schnack.server.modules.last import BEGAN
from schnack.server.modules.last import STORE as LAST
from schnack.server.modules.mam import STORE as MAM
from schnack.server.modules.phone import BOOK, DAY, SWEEP, Phone
from schnack.server.storage import open_storage
from schnack.xmpp import ht, ns
from schnack.xmpp.jid import JID as Address
from schnack.xmpp.payloads import bind2, fast
from schnack.xmpp.payloads import sasl2 as payload
from schnack.xmpp.payloads.disco import INFO, DiscoInfo
from schnack.xmpp.payloads.phone_book import ENTRY, NS, PHONE_BOOK, Entry, PhoneBook, answer_hash
from schnack.xmpp.xml import element, serialize

from ..conftest import require_service
from ..harness import add_user, make_config, running
from ..server.cluster.conftest import REDIS_URL, eventually, redis_available
from ..server.sms_receiver import Webhook, webhook
from ..server.storage.conftest import postgres_schema, with_query
from .cluster_harness import clear_prefix
from .slix import PASSWORD as SLIX_PASSWORD
from .slix import SlixClient
from .test_restart import Process
from .test_upload import ask as ask_raw
from .test_upload import condition, logged_in
from .wire import Wire

pytestmark = pytest.mark.asyncio

NUMBER = "+4915123456789"
OTHER = "+4915223456789"
THIRD = "+4917612345678"
PASSWORD = "a long random password"
AGENT = payload.UserAgent("0b3a4c1e-8f52-4c1a-9d0e-3b1f2a6c7d88", "raw", "test")


def phone_modules(url: str, **options: Any) -> dict[str, Any]:
    return {"enable": ["phone"], "phone": {"sms": "http", "sms_url": url, **options}}


@pytest.fixture
async def hook() -> AsyncIterator[Webhook]:
    async with webhook() as receiver:
        yield receiver


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def server(tmp_path: Path, hook: Webhook) -> AsyncIterator[Server]:
    async with running(tmp_path, listen=True, modules=phone_modules(hook.url)) as srv:
        yield srv


def base(server: Server) -> str:
    host, port = server.bound["http"][0]
    return f"http://{host}:{port}/phone"


def installation() -> dict[str, str]:
    """The header an app sends with each request: a fresh installation each time."""
    return {"Installation-Id": str(uuid.uuid4())}


def app(number: str = NUMBER) -> dict[str, str]:
    """The header of the app that signs ``number`` up: it asks for the code and sends it back."""
    return {"Installation-Id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"tel:{number}"))}


async def ask_code(http: aiohttp.ClientSession, server: Server, number: str = NUMBER,
                   headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
    headers = app(number) if headers is None else headers
    async with http.get(f"{base(server)}/authentication/{number.replace('+', '%2B')}", headers=headers) as answer:
        await answer.read()
        return answer


async def set_password(http: aiohttp.ClientSession, server: Server, code: str, number: str = NUMBER,
                       password: str = PASSWORD, *, basic: bool = False,
                       headers: dict[str, str] | None = None) -> tuple[int, str]:
    if basic:
        authorization = "Basic " + base64.b64encode(f"{number}:{code}".encode()).decode()
    else:
        authorization = base64.b64encode(f"{number}\0{code}".encode()).decode()
    async with http.post(f"{base(server)}/password", data=password.encode(),
                         headers={**(app(number) if headers is None else headers), "Authorization": authorization}) as answer:
        return answer.status, await answer.text()


def last_code(hook: Webhook, number: str = NUMBER) -> str:
    item = [item for item in hook.received if item.json["to"] == number][-1]
    found = re.fullmatch(r"([0-9]{6}) is your code for localhost\. Do not share it\.", item.json["text"])
    assert found is not None, item.json
    return found.group(1)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def test_a_code_by_sms_creates_the_account_and_slixmpp_logs_in_with_it(
        server: Server, hook: Webhook, http: aiohttp.ClientSession) -> None:
    quicksy = {"Installation-Id": "2c4f5f1e-6a0b-4e8e-9d8c-0e7f5b7c1a2d", "Accept-Language": "de-DE",
               "User-Agent": "Quicksy/2.10"}
    answer = await ask_code(http, server, headers=quicksy)
    assert answer.status == 200
    assert [item.json["to"] for item in hook.received] == [NUMBER]
    assert await set_password(http, server, last_code(hook), headers=quicksy) == (201, "the account was created\n")
    client = SlixClient(server, f"{NUMBER}@localhost", PASSWORD)
    try:
        assert await client.start()
    finally:
        await client.stop()
    # Only a salted hash was kept of the code, and it is gone once used.
    assert await server.storage.kv.get("localhost", "", f"phone-code/{NUMBER}") is None
    assert await server.storage.kv.get("localhost", NUMBER, "phone") is not None


async def test_a_code_is_used_once(server: Server, hook: Webhook, http: aiohttp.ClientSession) -> None:
    await ask_code(http, server)
    code = last_code(hook)
    assert (await set_password(http, server, code, basic=True))[0] == 201
    status, text = await set_password(http, server, code, password="another long password")
    assert status == 404 and "ask for a new one" in text


async def test_the_same_request_sent_again_gets_the_same_answer(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    """An app whose answer was lost on the way (a mobile network) sends the same request again:
    it is answered as the first was, the account has the password the app sent, and no new SMS
    is needed. Only the same request: another password or another installation gets nothing,
    and nothing is kept of the request but salted hashes. (Three codes for the number, from one
    address.)"""
    modules = phone_modules(hook.url, sms_interval=0, sms_per_day_per_address=3)
    async with running(tmp_path, listen=True, modules=modules) as server:
        await ask_code(http, server)
        code = last_code(hook)
        assert await set_password(http, server, code) == (201, "the account was created\n")
        assert await set_password(http, server, code) == (201, "the account was created\n")
        assert (await set_password(http, server, code, password="another long password"))[0] == 404
        assert (await set_password(http, server, code, headers=installation()))[0] == 404
        assert await set_password(http, server, code) == (201, "the account was created\n")
        kept = b"".join([await server.storage.kv.get("localhost", "", key) or b"" for key in
                         await server.storage.maps.items("localhost", "", SWEEP)])
        assert f"phone-done/{NUMBER}" in await server.storage.maps.items("localhost", "", SWEEP)
        assert f'"{code}"'.encode() not in kept and PASSWORD.encode() not in kept
        assert app()["Installation-Id"].encode() not in kept
        client = SlixClient(server, f"{NUMBER}@localhost", PASSWORD)
        try:
            assert await client.start()
        finally:
            await client.stop()
        # A new phone: the account existed, and the request sent again is answered 200 too.
        await ask_code(http, server)
        code = last_code(hook)
        assert (await set_password(http, server, code, password="the new phone's password"))[0] == 200
        assert (await set_password(http, server, code, password="the new phone's password"))[0] == 200
        # The password changed since (another code, another one): a request sent again once
        # more is not answered as if its password were the account's.
        await ask_code(http, server)
        assert (await set_password(http, server, last_code(hook)))[0] == 200
        assert (await set_password(http, server, code, password="the new phone's password"))[0] == 404


async def test_the_same_request_sent_again_after_the_codes_lifetime_is_404(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    async with running(tmp_path, listen=True, modules=phone_modules(hook.url, code_lifetime=4.0)) as server:
        await ask_code(http, server)
        assert (await set_password(http, server, last_code(hook)))[0] == 201
        # Until the code's expiry, as the sweep's index has it.
        until = float((await server.storage.maps.items("localhost", "", SWEEP))[f"phone-done/{NUMBER}"])
        await asyncio.sleep(until - time.time() + 0.1)
        assert (await set_password(http, server, last_code(hook)))[0] == 404


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path, hook: Webhook, **options: Any) -> AsyncIterator[
        tuple[Server, Server, str, asyncpg.Connection]]:
    """Nodes a and b of a cluster on one PostgreSQL schema and Redis, with the phone module (and
    its ``options``); the schema's name and an administrative connection."""
    reason = await redis_available(REDIS_URL)
    require_service(reason is None, f"Redis not reachable at {REDIS_URL}: {reason}")
    prefix = f"schnack-test-{secrets.token_hex(6)}:"
    async with postgres_schema() as (url, schema, admin):
        def node(name: str) -> Any:
            return running(tmp_path / name, listen=True, modules=phone_modules(hook.url, **options),
                           storage={"url": url},
                           cluster={"redis_url": REDIS_URL, "node_name": name, "key_prefix": prefix,
                                    "heartbeat_interval": 0.2, "node_ttl": 2.0})

        try:
            async with node("a") as node_a, node("b") as node_b:
                yield node_a, node_b, schema, admin
        finally:
            await clear_prefix(REDIS_URL, prefix)


async def code_in_use(server: Server) -> bool:
    """Whether a request holds the use of a code (it is making the account with it)."""
    keys = await server.storage.maps.items("localhost", "", SWEEP)
    return any([await server.storage.kv.get("localhost", "", key) is not None
                for key in keys if key.startswith("phone-used/")])


@contextlib.asynccontextmanager
async def making_the_account(http: aiohttp.ClientSession, server: Server, hook: Webhook, schema: str,
                             admin: asyncpg.Connection) -> AsyncIterator[tuple[str, asyncio.Task[tuple[int, str]]]]:
    """A code asked for, and the request with it making the account on ``server``, held up
    behind a lock on the accounts table until the block ends: the code and that request."""
    await ask_code(http, server)
    code = last_code(hook)
    async with admin.transaction():
        await admin.execute(f'LOCK TABLE "{schema}".accounts IN ACCESS EXCLUSIVE MODE')
        first = asyncio.create_task(set_password(http, server, code))
        await eventually(lambda: code_in_use(server), bool)
        yield code, first


@pytest.mark.parametrize("attempts", [3, 1])
@pytest.mark.parametrize("where", ["the same node", "another node"])
async def test_the_same_request_sent_while_the_first_is_at_it_gets_its_answer(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture,
        attempts: int, where: str) -> None:
    """An app whose connection dropped sends the request again while the first is still making
    the account, to the node of the first or to another live one: the request sent again waits
    for the first and gets its answer, and spends no try of the code, also when the code allows
    only one."""
    caplog.set_level(logging.INFO, logger="schnack.server.modules.phone")
    async with two_nodes(tmp_path, hook, code_attempts=attempts) as (node_a, node_b, schema, admin):
        async with making_the_account(http, node_a, hook, schema, admin) as (code, first):
            again = asyncio.create_task(set_password(http, node_a if where == "the same node" else node_b, code))

            async def waiting() -> bool:
                return "waits for the request using it" in caplog.text or again.done()

            await eventually(waiting, bool)
        assert await first == (201, "the account was created\n")
        assert await again == (201, "the account was created\n")
        assert len(hook.received) == 1


async def test_a_wrong_code_sent_while_the_right_one_is_at_it_counts(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    """Only the right code waits for the request using it: a wrong one is a try as any other,
    and with one try allowed it voids the code (the request at it makes the account still)."""
    async with (postgres_schema() as (url, schema, admin),
                running(tmp_path, listen=True, modules=phone_modules(hook.url, code_attempts=1),
                        storage={"url": url}) as server):
        async with making_the_account(http, server, hook, schema, admin) as (code, first):
            assert (await set_password(http, server, wrong(code)))[0] == 429
        assert await first == (201, "the account was created\n")
        assert (await set_password(http, server, code, password="another long password"))[0] == 404


async def test_the_same_request_is_told_to_come_again_when_the_first_takes_long(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first request is held up longer than the request sent again waits for it: 503, the
    code stays valid (its one try unspent), and the request sent once more, after the first is
    done, is answered as the first was."""
    monkeypatch.setattr(phone, "_WAIT_FOR_USE", 0.5)
    async with (postgres_schema() as (url, schema, admin),
                running(tmp_path, listen=True, modules=phone_modules(hook.url, code_attempts=1),
                        storage={"url": url}) as server):
        async with making_the_account(http, server, hook, schema, admin) as (code, first):
            assert await set_password(http, server, code) == (
                503, "this code is being used by another request: send the request again shortly\n")
        assert await first == (201, "the account was created\n")
        assert await set_password(http, server, code) == (201, "the account was created\n")


async def test_a_literal_plus_in_the_path_is_a_plus(server: Server, hook: Webhook, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{base(server)}/authentication/{NUMBER}", headers=installation()) as answer:
        assert answer.status == 200
    assert [item.json["to"] for item in hook.received] == [NUMBER]


@pytest.mark.parametrize("number", ["4915123456789", "+49 151 23456789", "+123", "+4915123456789x", "%2B0151"])
async def test_a_number_not_in_e164_form_is_400(server: Server, hook: Webhook, http: aiohttp.ClientSession,
                                                 number: str) -> None:
    async with http.get(f"{base(server)}/authentication/{number}", headers=installation()) as answer:
        assert answer.status == 400
        assert len((await answer.text()).strip().splitlines()) == 1
    assert hook.received == []


async def test_a_malformed_installation_id_is_400(server: Server, hook: Webhook, http: aiohttp.ClientSession) -> None:
    answer = await ask_code(http, server, headers={"Installation-Id": "not-a-uuid"})
    assert answer.status == 400
    assert hook.received == []


async def test_a_request_without_installation_id_sends_nothing(
        server: Server, hook: Webhook, http: aiohttp.ClientSession) -> None:
    """Any web page can make its visitors' browsers send this GET (an image, a link fetched), but
    not with a header of its own: the header keeps pages from having SMS sent to a victim."""
    async with http.get(f"{base(server)}/authentication/%2B4915123456789") as answer:
        assert answer.status == 400
        assert (await answer.text()).strip() == (
            "the Installation-Id header (a UUID the app keeps per installation) is required")
    assert hook.received == []


@pytest.mark.parametrize("authorization", [
    "", "!!!", base64.b64encode(b"+4915123456789").decode(), base64.b64encode(b"0151\x00123456").decode(),
    base64.b64encode(b"+4915123456789\x0012345").decode(), "Basic " + base64.b64encode(b"+4915123456789").decode(),
])
async def test_a_malformed_authorization_is_400(server: Server, http: aiohttp.ClientSession, authorization: str) -> None:
    async with http.post(f"{base(server)}/password", data=PASSWORD,
                         headers={**app(), "Authorization": authorization}) as answer:
        assert answer.status == 400


async def test_a_refused_password_is_400_and_keeps_the_code(
        server: Server, hook: Webhook, http: aiohttp.ClientSession) -> None:
    await ask_code(http, server)
    code = last_code(hook)
    status, text = await set_password(http, server, code, password="short")
    assert status == 400 and text == "the password needs at least 8 characters\n"
    async with http.post(f"{base(server)}/password", data=b"\xff\xfe bad utf-8 bytes",
                         headers={**app(), "Authorization": base64.b64encode(f"{NUMBER}\0{code}".encode()).decode()}) as answer:
        assert answer.status == 400
    assert (await set_password(http, server, code))[0] == 201


async def test_no_code_sent_is_404(server: Server, http: aiohttp.ClientSession) -> None:
    status, text = await set_password(http, server, "123456")
    assert status == 404 and text == "no code is pending for this number: ask for a new one\n"


async def test_wrong_codes_are_401_until_the_last_one_voids_the_code(
        server: Server, hook: Webhook, http: aiohttp.ClientSession) -> None:
    await ask_code(http, server)
    code = last_code(hook)
    assert await set_password(http, server, wrong(code)) == (401, "wrong code; 2 more tries for this one\n")
    assert await set_password(http, server, wrong(code)) == (401, "wrong code; 1 more try for this one\n")
    async with http.post(f"{base(server)}/password", data=PASSWORD, headers={
            **app(), "Authorization": base64.b64encode(f"{NUMBER}\0{wrong(code)}".encode()).decode()}) as answer:
        assert answer.status == 429
        # The next code may go a minute after the last one.
        assert 1 <= int(answer.headers["Retry-After"]) <= 60
    # The code is void: the right digits do not help any more.
    assert (await set_password(http, server, code))[0] == 404
    assert await server.storage.accounts.get("localhost", NUMBER) is None


async def test_only_the_installation_that_asked_for_a_code_may_try_it(
        server: Server, hook: Webhook, http: aiohttp.ClientSession) -> None:
    """Anyone can send tries for any number. Counted, a stranger's wrong ones would void each
    code the number's owner asks for, keeping the owner from signing up, and a 401 would tell
    the stranger that the number is being signed up. So tries from another installation than
    the one that asked are answered as if no code were pending, and count nothing."""
    await ask_code(http, server)
    code = last_code(hook)
    for _ in range(5):
        assert await set_password(http, server, wrong(code), headers=installation()) == (
            404, "no code is pending for this number: ask for a new one\n")
    # Nor does the right code help a stranger, who learns nothing from it either.
    assert (await set_password(http, server, code, headers=installation()))[0] == 404
    assert await set_password(http, server, wrong(code)) == (401, "wrong code; 2 more tries for this one\n")
    assert (await set_password(http, server, code))[0] == 201


async def test_a_try_without_installation_id_is_400(server: Server, hook: Webhook, http: aiohttp.ClientSession) -> None:
    await ask_code(http, server)
    for headers in ({}, {"Installation-Id": "not-a-uuid"}):
        status, _ = await set_password(http, server, last_code(hook), headers=headers)
        assert status == 400
    assert (await set_password(http, server, last_code(hook)))[0] == 201


async def test_guesses_sent_at_once_are_judged_no_more_than_code_attempts_times(
        server: Server, hook: Webhook, http: aiohttp.ClientSession) -> None:
    """An attacker sending many guesses at once, the right one among them: only the first
    code_attempts (3) tries are checked against the code, so the right one wins only if it is
    among them, and the others are told nothing of their digits."""
    await ask_code(http, server)
    code = last_code(hook)
    guesses = [code, *(f"{(int(code) + i) % 1_000_000:06d}" for i in range(1, 30))]
    answers = await asyncio.gather(*(set_password(http, server, guess) for guess in guesses))
    judged = [(status, text) for status, text in answers if status in (200, 201) or "wrong code" in text]
    assert len(judged) <= 3, answers
    others = [(status, text) for status, text in answers if (status, text) not in judged]
    assert {status for status, _ in others} <= {404, 429}, others


async def test_guesses_sent_at_once_to_two_nodes_are_judged_no_more_than_code_attempts_times(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    """The same across two nodes on one PostgreSQL schema: the tries' places are claimed in it."""
    async with postgres_schema() as (url, _, _):
        modules, storage = phone_modules(hook.url), {"url": url}
        async with (
            running(tmp_path / "a", listen=True, modules=modules, storage=storage) as node_a,
            running(tmp_path / "b", listen=True, modules=modules, storage=storage) as node_b,
        ):
            await ask_code(http, node_a)
            code = last_code(hook)
            guesses = [code, *(f"{(int(code) + i) % 1_000_000:06d}" for i in range(1, 30))]
            answers = await asyncio.gather(*(set_password(http, (node_a, node_b)[i % 2], guess)
                                             for i, guess in enumerate(guesses)))
            judged = [answer for answer in answers if answer[0] in (200, 201) or "wrong code" in answer[1]]
            assert len(judged) <= 3, answers


async def test_an_account_storage_cannot_make_is_503_and_the_code_stays(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    """The right code comes while PostgreSQL holds up the accounts table past command_timeout
    (another connection holds a lock on it): 503 with Retry-After, and neither the code nor a
    try of it is used up by the failure, so the same request made once storage works again
    makes the account."""
    async with (postgres_schema() as (url, schema, admin),
                running(tmp_path, listen=True, modules=phone_modules(hook.url),
                        storage={"url": with_query(url, command_timeout="1")}) as server):
        assert (await ask_code(http, server)).status == 200
        authorization = base64.b64encode(f"{NUMBER}\0{last_code(hook)}".encode()).decode()
        async with admin.transaction():
            await admin.execute(f'LOCK TABLE "{schema}".accounts IN ACCESS EXCLUSIVE MODE')
            # More failed tries than code_attempts: a right one that failed counts none.
            for _ in range(4):
                async with http.post(f"{base(server)}/password", data=PASSWORD,
                                     headers={**app(), "Authorization": authorization}) as answer:
                    assert answer.status == 503, await answer.text()
                    assert int(answer.headers["Retry-After"]) >= 1
                    assert (await answer.text()).count("\n") == 1
        assert await set_password(http, server, last_code(hook)) == (201, "the account was created\n")
        client = SlixClient(server, f"{NUMBER}@localhost", PASSWORD)
        try:
            assert await client.start()
        finally:
            await client.stop()


async def test_an_account_made_whose_number_storage_cannot_mark_verified_is_201_when_sent_again(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    """The account is created, and then PostgreSQL holds up the mark that its number is verified
    past command_timeout (another transaction writes the same row): 503, and the same request
    made again finds the account that the first created, marks the number and is told 201, so
    that the app sets the new account up."""
    async with (postgres_schema() as (url, schema, admin),
                running(tmp_path, listen=True, modules=phone_modules(hook.url),
                        storage={"url": with_query(url, command_timeout="1")}) as server):
        await ask_code(http, server)
        async with admin.transaction():
            # The schema's triggers name its tables unqualified.
            await admin.execute(f'SET LOCAL search_path TO "{schema}"')
            await admin.execute("INSERT INTO kv VALUES ($1, $2, $3, $4)", "localhost", NUMBER, "phone", b"{}")
            assert (await set_password(http, server, last_code(hook)))[0] == 503
            assert await server.storage.accounts.get("localhost", NUMBER) is not None
            await admin.execute("DELETE FROM kv WHERE host = $1 AND username = $2", "localhost", NUMBER)
        assert await set_password(http, server, last_code(hook)) == (201, "the account was created\n")
        assert await server.storage.kv.get("localhost", NUMBER, "phone") is not None
        assert await set_password(http, server, last_code(hook)) == (201, "the account was created\n")


async def test_an_expired_code_is_404(tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    async with running(tmp_path, listen=True, modules=phone_modules(hook.url, code_lifetime=1.0)) as server:
        await ask_code(http, server)
        await asyncio.sleep(1.2)
        assert (await set_password(http, server, last_code(hook)))[0] == 404
        # The sweep deletes what is past its time, and the index with it.
        module = server.modules["phone"]
        assert isinstance(module, Phone)
        assert await module.sweep() >= 1
        assert await server.storage.kv.get("localhost", "", f"phone-code/{NUMBER}") is None
        assert f"phone-code/{NUMBER}" not in await server.storage.maps.items("localhost", "", SWEEP)


@contextlib.asynccontextmanager
async def phone_server(tmp_path: Path, backend: str, hook: Webhook, **options: Any) -> AsyncIterator[Server]:
    """A listening server with the phone module, its storage SQLite or a fresh PostgreSQL schema."""
    async with contextlib.AsyncExitStack() as stack:
        storage: dict[str, Any] = {}
        if backend == "postgres":
            url, _, _ = await stack.enter_async_context(postgres_schema())
            storage["storage"] = {"url": url}
        yield await stack.enter_async_context(
            running(tmp_path, listen=True, modules=phone_modules(hook.url, **options), **storage))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_code_sent_while_the_sweep_runs_survives_it(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession, backend: str) -> None:
    """The sweep finds a number's code past its time, and before it deletes it the number gets
    a new code (the hourly sweep deletes its keys one by one, the requests go on meanwhile):
    the new code stays, usable, and in the index to go once its own time is past."""
    async with phone_server(tmp_path, backend, hook, sms_interval=0) as server:
        module = server.modules["phone"]
        assert isinstance(module, Phone)
        key = f"phone-code/{NUMBER}"
        assert (await ask_code(http, server)).status == 200
        expired = float((await server.storage.maps.items("localhost", "", SWEEP))[key])
        due = await module.due(expired)
        assert key in due
        assert (await ask_code(http, server)).status == 200
        for name, noted in due.items():
            await module.expire(name, noted, expired)
        assert (await set_password(http, server, last_code(hook)))[0] == 201
        indexed = await server.storage.maps.get("localhost", "", SWEEP, key)
        assert indexed is not None and float(indexed) > expired


async def test_a_number_gets_one_code_a_minute(server: Server, hook: Webhook, http: aiohttp.ClientSession) -> None:
    assert (await ask_code(http, server)).status == 200
    again = await ask_code(http, server)
    assert again.status == 429
    assert 1 <= int(again.headers["Retry-After"]) <= 60
    assert (await ask_code(http, server, OTHER)).status == 200
    assert [item.json["to"] for item in hook.received] == [NUMBER, OTHER]


async def test_the_daily_limits_per_number_and_installation(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    modules = phone_modules(hook.url, sms_interval=0, sms_per_day=2, sms_per_installation_per_day=3)
    async with running(tmp_path, listen=True, modules=modules) as server:
        installation = {"Installation-Id": "6f9619ff-8b86-d011-b42d-00cf4fc964ff"}
        assert [(await ask_code(http, server, NUMBER, installation)).status for _ in range(3)] == [200, 200, 429]
        assert (await ask_code(http, server, OTHER, installation)).status == 200
        refused = await ask_code(http, server, THIRD, installation)
        assert refused.status == 429
        # Until the next UTC day.
        assert 1 <= int(refused.headers["Retry-After"]) <= 86_400
        # Another installation may still ask for the other number.
        assert (await ask_code(http, server, OTHER)).status == 200
        assert len(hook.received) == 4


@contextlib.asynccontextmanager
async def from_address(address: str) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client whose requests come from ``address`` (one of the loopback's 127/8)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0))) as session:
        yield session


async def test_a_stranger_does_not_use_up_the_owners_codes_of_the_day(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    """A stranger asks for codes for the owner's number from its own address, each time as
    another installation, until refused: the owner, from another address, still gets a code
    that day and signs up."""
    async with running(tmp_path, listen=True, modules=phone_modules(hook.url, sms_interval=0)) as server:
        async with from_address("127.0.0.2") as stranger:
            asked = [(await ask_code(stranger, server, headers=installation())).status for _ in range(6)]
        owner = (await ask_code(http, server)).status
        assert (asked, owner) == ([200, 200, 429, 429, 429, 429], 200)
        assert (await set_password(http, server, last_code(hook)))[0] == 201


async def test_a_number_gets_sms_per_day_codes_from_all_addresses_together(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    """Strangers at many addresses still have no more than sms_per_day codes sent to one number:
    SMS bombing stays bounded."""
    modules = phone_modules(hook.url, sms_interval=0, sms_per_day=5, sms_per_day_per_address=2)
    async with running(tmp_path, listen=True, modules=modules) as server:
        asked = []
        for i in range(2, 6):
            async with from_address(f"127.0.0.{i}") as stranger:
                asked.append([(await ask_code(stranger, server, headers=installation())).status for _ in range(3)])
        assert asked == [[200, 200, 429], [200, 200, 429], [200, 429, 429], [429, 429, 429]]
        refused = await ask_code(http, server)
        assert refused.status == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 86_400
        assert len(hook.received) == 5


async def test_an_address_gets_so_many_codes_an_hour(tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    async with running(tmp_path, listen=True, modules=phone_modules(hook.url, sms_per_ip_per_hour=2)) as server:
        assert (await ask_code(http, server, NUMBER)).status == 200
        assert (await ask_code(http, server, OTHER)).status == 200
        refused = await ask_code(http, server, THIRD)
        assert refused.status == 429
        assert 3500 <= int(refused.headers["Retry-After"]) <= 3600
        # Once one of them was asked for over an hour ago, one more may be.
        claims = [key for key in await server.storage.maps.items("localhost", "", SWEEP)
                  if key.startswith("phone-address/")]
        assert len(claims) == 2
        await server.storage.kv.set("localhost", "", claims[0], f"{time.time() - 3601!r} earlier".encode())
        assert (await ask_code(http, server, THIRD)).status == 200
        assert (await ask_code(http, server, "+4915723456789")).status == 429


async def test_an_address_gets_so_many_codes_an_hour_from_all_nodes_together(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    """Two nodes on one PostgreSQL schema: an address that spreads its requests over both, all
    at once, still gets sms_per_ip_per_hour codes, not that many per node."""
    numbers = [f"+49151234567{i:02d}" for i in range(6)]
    async with postgres_schema() as (url, _, _):
        modules, storage = phone_modules(hook.url, sms_per_ip_per_hour=2), {"url": url}
        async with (
            running(tmp_path / "a", listen=True, modules=modules, storage=storage) as node_a,
            running(tmp_path / "b", listen=True, modules=modules, storage=storage) as node_b,
        ):
            answers = await asyncio.gather(*(ask_code(http, (node_a, node_b)[i % 2], number)
                                             for i, number in enumerate(numbers)))
            assert sorted(answer.status for answer in answers) == [200, 200, 429, 429, 429, 429]
            assert len(hook.received) == 2
            refused = await ask_code(http, node_b, numbers[0])
            assert refused.status == 429
            assert 3500 <= int(refused.headers["Retry-After"]) <= 3600


async def test_a_gateway_failure_is_500_and_nothing_counts_as_sent(
        server: Server, hook: Webhook, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    hook.status = 503
    assert (await ask_code(http, server)).status == 500
    assert any("was not sent" in record.getMessage() and "503" in record.getMessage() for record in caplog.records)
    # No code is pending, and the failed SMS did not use up the minute.
    assert (await set_password(http, server, last_code(hook)))[0] == 404
    hook.status = 200
    assert (await ask_code(http, server)).status == 200
    assert (await set_password(http, server, last_code(hook)))[0] == 201


async def test_a_code_storage_cannot_record_is_503_and_neither_sent_nor_counted(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    """Codes are asked for while PostgreSQL holds up the writes past command_timeout: first the
    whole kv table (another connection holds a lock on it), then only the row of the number's
    code, after the limits were claimed. Each answer is 503 with Retry-After, no SMS goes out,
    the code sent before stays the one pending, and nothing counts against the number's daily
    limit: once storage works, that code makes the account and the day's second code is sent."""
    modules = phone_modules(hook.url, sms_interval=0, sms_per_day=2)
    async with (postgres_schema() as (url, schema, admin),
                running(tmp_path, listen=True, modules=modules,
                        storage={"url": with_query(url, command_timeout="1")}) as server):
        assert (await ask_code(http, server)).status == 200
        first = last_code(hook)
        for lock in (f'LOCK TABLE "{schema}".kv IN ACCESS EXCLUSIVE MODE',
                     f'SELECT 1 FROM "{schema}".kv WHERE store = \'phone-code/{NUMBER}\' FOR UPDATE'):
            async with admin.transaction():
                await admin.execute(lock)
                for _ in range(2):
                    answer = await ask_code(http, server)
                    assert answer.status == 503, lock
                    assert int(answer.headers["Retry-After"]) >= 1
                    assert (await answer.text()).count("\n") == 1
        assert len(hook.received) == 1
        assert await set_password(http, server, first) == (201, "the account was created\n")
        assert (await ask_code(http, server)).status == 200
        assert len(hook.received) == 2
        assert (await ask_code(http, server)).status == 429


async def test_a_gateway_failure_leaves_the_code_sent_before_pending(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    """The new code is stored before its SMS goes out; when the gateway then fails, the code
    sent before takes its place again, and still makes the account."""
    async with running(tmp_path, listen=True, modules=phone_modules(hook.url, sms_interval=0)) as server:
        assert (await ask_code(http, server)).status == 200
        first = last_code(hook)
        hook.status = 503
        assert (await ask_code(http, server)).status == 500
        hook.status = 200
        assert await set_password(http, server, first) == (201, "the account was created\n")


async def test_the_command_gateway_sends_the_code(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    out = tmp_path / "outbox"
    script = tmp_path / "send-sms.py"
    script.write_text("import sys\nopen(sys.argv[1], 'a').write(sys.argv[2] + ' ' + sys.argv[3] + '\\n')\n")
    command = [sys.executable, str(script), str(out), "{number}", "{text}"]
    modules = {"enable": ["phone"], "phone": {"sms": "command", "sms_command": command}}
    async with running(tmp_path, listen=True, modules=modules) as server:
        assert (await ask_code(http, server)).status == 200
        number, code, *rest = out.read_text().split()
        assert number == NUMBER and rest == ["is", "your", "code", "for", "localhost.", "Do", "not", "share", "it."]
        assert (await set_password(http, server, code))[0] == 201


async def test_a_head_request_sends_no_sms(server: Server, hook: Webhook, http: aiohttp.ClientSession) -> None:
    async with http.head(f"{base(server)}/authentication/%2B4915123456789") as answer:
        assert answer.status == 405
    assert hook.received == []


def outside_address() -> str | None:
    """An address of this machine that is not the loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 9))
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if ipaddress.ip_address(address).is_loopback else address


async def test_plain_http_from_another_machine_is_403(tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    address = outside_address()
    if address is None:
        pytest.skip("this machine has no address but the loopback")
    server = Server(make_config(tmp_path, listen={"http": [f"{address}:0"]}, modules=phone_modules(hook.url)))
    await server.start()
    try:
        answer = await ask_code(http, server)
        assert answer.status == 403
        assert (await set_password(http, server, "123456"))[0] == 403
    finally:
        await server.stop()
    assert hook.received == []


async def test_the_api_is_absent_when_the_module_is_off(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running(tmp_path, listen=True) as server:
        host, port = server.bound["http"][0]
        async with http.get(f"http://{host}:{port}/phone/authentication/%2B4915123456789") as answer:
            assert answer.status == 404


async def request_token(server: Server, number: str, password: str) -> fast.Token:
    """A SASL2 login with the password that asks for a FAST token (XEP-0484 §3.3)."""
    wire = await Wire.connect(server, "c2s_tls")
    await wire.open()
    wire.send(serialize(payload.Authenticate(
        "PLAIN", f"\0{number}\0{password}".encode(), AGENT, (fast.RequestToken("HT-SHA-256-NONE").to_xml(),)
    ).to_xml()))
    success = await wire.next()
    wire.close()
    assert success is not None and success.tag == payload.SUCCESS, serialize(success) if success is not None else None
    issued = success.find(fast.TOKEN)
    assert issued is not None
    return fast.Token.from_xml(issued)


async def token_login(server: Server, number: str, token: fast.Token) -> str:
    """The tag of the answer to a login with the token."""
    wire = await Wire.connect(server, "c2s_tls")
    await wire.open()
    proof = number.encode() + b"\0" + ht.initiator(ht.key_of(token.token), b"")
    wire.send(serialize(payload.Authenticate("HT-SHA-256-NONE", proof, AGENT, (fast.Fast(count=1).to_xml(),)).to_xml()))
    answer = await wire.next()
    wire.close()
    assert answer is not None
    return answer.tag


async def test_a_new_phone_re_keys_the_account(tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    async with running(tmp_path, listen=True, modules=phone_modules(hook.url, sms_interval=0)) as server:
        await ask_code(http, server)
        assert (await set_password(http, server, last_code(hook)))[0] == 201
        token = await request_token(server, NUMBER, PASSWORD)
        old_phone = SlixClient(server, f"{NUMBER}@localhost", PASSWORD)
        try:
            assert await old_phone.start()
            await ask_code(http, server)
            new_password = "the new phone's password"
            assert await set_password(http, server, last_code(hook), password=new_password) == (
                200, "the password was changed\n")
            # The session of the old phone ends, not-authorized.
            async with asyncio.timeout(10):
                await old_phone.disconnected.wait()
            assert old_phone.stream_errors == ["not-authorized"]
        finally:
            await old_phone.stop()
        assert await token_login(server, NUMBER, token) == payload.FAILURE
        refused = SlixClient(server, f"{NUMBER}@localhost", PASSWORD)
        try:
            assert not await refused.start()
        finally:
            await refused.stop()
        new_phone = SlixClient(server, f"{NUMBER}@localhost", new_password)
        try:
            assert await new_phone.start()
        finally:
            await new_phone.stop()


async def test_a_login_with_the_old_password_that_binds_after_the_new_phone_ends(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    """Whoever holds the old password (a stolen phone) logs in with it and waits before binding:
    the number verified meanwhile on the new phone, the session bound with the old password
    ends as every other one of the old phone does."""
    async with running(tmp_path, listen=True, modules=phone_modules(hook.url, sms_interval=0)) as server:
        await ask_code(http, server)
        assert (await set_password(http, server, last_code(hook)))[0] == 201
        old_phone = await Wire.connect(server, "c2s_tls")
        try:
            await old_phone.login(NUMBER, PASSWORD, await old_phone.open())
            await ask_code(http, server)
            assert (await set_password(http, server, last_code(hook), password="the new phone's password"))[0] == 200
            # Bound, it sends at once what it wants done as the account (a ping; a message would
            # go as well): nothing is, the session ends first.
            old_phone.send(f"<iq type='set' id='b1'><bind xmlns='{ns.BIND}'><resource>old</resource></bind></iq>"
                           f"<iq type='get' id='p1' to='localhost'><ping xmlns='{ns.PING}'/></iq>")
            answers = []
            while (answer := await old_phone.next()) is not None:
                answers.append(answer)
            # The bind's result, and then nothing but the end.
            assert [el.get("id", el.tag) for el in answers] == ["b1", f"{{{ns.STREAMS}}}error"], [
                serialize(el) for el in answers]
            assert answers[-1].find(f"{{{ns.STREAM_ERRORS}}}not-authorized") is not None
        finally:
            old_phone.close()

        async def online() -> bool:
            return server.sessions.is_online(Address(NUMBER, "localhost"))

        await eventually(online, lambda still: not still)


async def rekeyed_during_login(server: Server, http: aiohttp.ClientSession, hook: Webhook,
                               *inline: Element) -> Wire:
    """The old phone's SASL2 login with the old password and ``inline`` requests, during which
    the number is verified on the new phone: after the password was checked, while a handler of
    the success takes its time. The old phone's connection, the success on its way."""
    checked, rekeyed = asyncio.Event(), asyncio.Event()

    async def slow(*_: Any) -> None:
        checked.set()
        await rekeyed.wait()

    server.hooks.add(sasl2.SUCCESS, slow, priority=100)
    old_phone = await Wire.connect(server, "c2s_tls")
    await old_phone.open()
    old_phone.send(serialize(payload.Authenticate("PLAIN", f"\0{NUMBER}\0{PASSWORD}".encode(), AGENT, inline).to_xml()))
    async with asyncio.timeout(10):
        await checked.wait()
    await ask_code(http, server)
    assert (await set_password(http, server, last_code(hook), password="the new phone's password"))[0] == 200
    rekeyed.set()
    return old_phone


async def test_a_token_asked_for_with_the_old_password_is_not_issued_after_a_new_phone(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    """A login with the old password asks for a FAST token, and the number is verified on the
    new phone (tokens revoked) before the token is made: it is not made, as it would be bound
    to the new password and outlive the change."""
    async with running(tmp_path, listen=True, modules=phone_modules(hook.url, sms_interval=0)) as server:
        await ask_code(http, server)
        assert (await set_password(http, server, last_code(hook)))[0] == 201
        old_phone = await rekeyed_during_login(server, http, hook, fast.RequestToken("HT-SHA-256-NONE").to_xml())
        try:
            success = await old_phone.next()
            assert success is not None and success.tag == payload.SUCCESS
        finally:
            old_phone.close()
        issued = success.find(fast.TOKEN)
        if issued is not None:
            assert await token_login(server, NUMBER, fast.Token.from_xml(issued)) == payload.FAILURE
        assert issued is None


async def test_a_login_with_the_old_password_bound_by_bind2_after_a_new_phone_ends(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    """The same with Bind 2 (XEP-0386): the session the login makes inline, after the password
    was checked and the number verified again, ends."""
    async with running(tmp_path, listen=True, modules=phone_modules(hook.url, sms_interval=0)) as server:
        await ask_code(http, server)
        assert (await set_password(http, server, last_code(hook)))[0] == 201
        old_phone = await rekeyed_during_login(server, http, hook, bind2.Bind("old").to_xml())
        try:
            assert await old_phone.stream_error() == "not-authorized"
        finally:
            old_phone.close()


async def test_sessions_by_token_and_by_password_of_a_number_stay(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    """A token login (XEP-0484, with Bind 2) and a password login the RFC 6120 way each keep the
    keys they were checked against: neither is taken for one made before a new phone."""
    async with running(tmp_path, listen=True, modules=phone_modules(hook.url)) as server:
        await ask_code(http, server)
        assert (await set_password(http, server, last_code(hook)))[0] == 201
        token = await request_token(server, NUMBER, PASSWORD)
        by_token = await Wire.connect(server, "c2s_tls")
        by_password = await Wire.connect(server, "c2s_tls")
        try:
            await by_token.open()
            proof = NUMBER.encode() + b"\0" + ht.initiator(ht.key_of(token.token), b"")
            by_token.send(serialize(payload.Authenticate("HT-SHA-256-NONE", proof, AGENT, (
                fast.Fast(count=1).to_xml(), bind2.Bind("phone").to_xml())).to_xml()))
            success = await by_token.next()
            assert success is not None and success.tag == payload.SUCCESS, serialize(success) if success else None
            assert await by_token.next() is not None  # the stream's features
            await by_password.login(NUMBER, PASSWORD, await by_password.open())
            await by_password.bind("laptop")
            for wire in (by_token, by_password):
                answer = await ask_raw(wire, f"<iq type='get' id='p' to='localhost'><ping xmlns='{ns.PING}'/></iq>")
                assert answer.get("type") == "result", serialize(answer)
        finally:
            by_token.close()
            by_password.close()


async def used_by_its_first_owner(server: Server, http: aiohttp.ClientSession, hook: Webhook) -> SlixClient:
    """The number's account, made by SMS, with a contact in its roster and a message in its
    archive, and its first owner's session (connected: stop it to leave)."""
    await add_user(server, "alice", PASSWORD)
    await ask_code(http, server)
    assert (await set_password(http, server, last_code(hook)))[0] == 201
    client = SlixClient(server, f"{NUMBER}@localhost", PASSWORD)
    assert await client.start()
    client.xmpp.send_presence(pto="alice@localhost", ptype="subscribe")
    await client.sync()
    await server.storage.archive.append("localhost", NUMBER, MAM, time.time(), "alice@localhost",
                                        b"<message xmlns='jabber:client'/>")
    return client


async def left(server: Server, client: SlixClient, days_ago: float = 0) -> None:
    """The session ends, and its end is recorded; then made ``days_ago`` older in storage, its
    start with it."""
    await client.stop()
    await eventually(lambda: server.storage.kv.get("localhost", NUMBER, LAST), lambda raw: raw is not None)
    if days_ago:
        ended = time.time() - days_ago * DAY
        await server.storage.kv.set("localhost", NUMBER, BEGAN, repr(ended - 60).encode())
        await server.storage.kv.set("localhost", NUMBER, LAST, json.dumps({"ended": ended, "status": None}).encode())


async def contacts_and_archive(server: Server) -> tuple[list[str], int]:
    _, items = await server.storage.roster.get("localhost", NUMBER)
    return sorted(items), await server.storage.archive.count("localhost", NUMBER, MAM)


async def test_a_number_unused_for_long_gets_a_new_empty_account(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    """Quicksy's reassignment: the carrier gave the number to someone else, who must not inherit
    the first owner's contacts and history."""
    async with running(tmp_path, listen=True, modules=phone_modules(hook.url, sms_interval=0)) as server:
        await left(server, await used_by_its_first_owner(server, http, hook), days_ago=29)
        assert await contacts_and_archive(server) == (["alice@localhost"], 1)
        await ask_code(http, server)
        new_password = "the new owner's password"
        assert await set_password(http, server, last_code(hook), password=new_password) == (
            201, "the account was created\n")
        assert await contacts_and_archive(server) == ([], 0)
        assert await server.storage.kv.get("localhost", NUMBER, LAST) is None
        assert await server.storage.kv.get("localhost", NUMBER, "phone") is not None
        client = SlixClient(server, f"{NUMBER}@localhost", new_password)
        try:
            assert await client.start()
        finally:
            await client.stop()


@pytest.mark.parametrize("days_ago", [27, 0])
async def test_a_number_used_lately_keeps_its_account(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession, days_ago: float) -> None:
    async with running(tmp_path, listen=True, modules=phone_modules(hook.url, sms_interval=0)) as server:
        await left(server, await used_by_its_first_owner(server, http, hook), days_ago)
        await ask_code(http, server)
        assert (await set_password(http, server, last_code(hook), password="a new phone's password"))[0] == 200
        assert await contacts_and_archive(server) == (["alice@localhost"], 1)


async def test_a_number_with_a_session_keeps_its_account_however_old_its_last_end(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    async with running(tmp_path, listen=True, modules=phone_modules(hook.url, sms_interval=0)) as server:
        old_phone = await used_by_its_first_owner(server, http, hook)
        try:
            ended = json.dumps({"ended": time.time() - 400 * DAY, "status": None}).encode()
            await server.storage.kv.set("localhost", NUMBER, LAST, ended)
            await ask_code(http, server)
            assert (await set_password(http, server, last_code(hook), password="a new phone's password"))[0] == 200
        finally:
            await old_phone.stop()
        assert await contacts_and_archive(server) == (["alice@localhost"], 1)


async def test_reassignment_is_off_with_reassign_after_zero(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    modules = phone_modules(hook.url, sms_interval=0, reassign_after=0)
    async with running(tmp_path, listen=True, modules=modules) as server:
        await left(server, await used_by_its_first_owner(server, http, hook), days_ago=400)
        await ask_code(http, server)
        assert (await set_password(http, server, last_code(hook), password="a new phone's password"))[0] == 200
        assert await contacts_and_archive(server) == (["alice@localhost"], 1)


async def test_a_number_online_until_the_server_was_killed_keeps_its_account(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    """A session that a crash ended recorded no end: it still counts as use of the account, or
    the phone its owner was using until then would lose every contact when verified anew."""
    modules = phone_modules(hook.url, sms_interval=0)
    async with running(tmp_path, listen=True, modules=modules) as server:
        await left(server, await used_by_its_first_owner(server, http, hook), days_ago=40)
    # The same data, served by a `schnack serve` that is killed while the owner is online.
    config = tmp_path / "schnack.toml"
    config.write_text(f'domains = ["localhost"]\ndata_dir = "{tmp_path / "data"}"\n'
                      '[listen]\nc2s = ["127.0.0.1:0"]\nc2s_tls = []\nhttp = []\nhttps = []\n')
    process = Process(config)
    process.start()
    before_login = time.time()
    try:
        client = SlixClient(process, f"{NUMBER}@localhost", PASSWORD)  # type: ignore[arg-type]
        assert await client.start()
        await client.sync()
        # The session's start is stored in the background: killed before that, the server would
        # have nothing to go by (as after a crash within moments of a login).
        storage = await open_storage(f"sqlite:///{tmp_path / 'data' / 'schnack.db'}")
        try:
            await eventually(lambda: storage.kv.get("localhost", NUMBER, BEGAN),
                             lambda began: float(began or 0) >= before_login)
        finally:
            await storage.close()
        process.kill()
        await client.stop()
    finally:
        process.stop()
    async with running(tmp_path, listen=True, modules=modules) as server:
        await ask_code(http, server)
        assert (await set_password(http, server, last_code(hook), password="a new phone's password"))[0] == 200
        assert await contacts_and_archive(server) == (["alice@localhost"], 1)


async def test_an_account_made_by_the_admin_is_not_verified_until_a_code_is(
        server: Server, hook: Webhook, http: aiohttp.ClientSession) -> None:
    await add_user(server, NUMBER, PASSWORD)
    assert await server.storage.kv.get("localhost", NUMBER, "phone") is None
    await ask_code(http, server)
    assert (await set_password(http, server, last_code(hook), password="verified now, new password"))[0] == 200
    assert await server.storage.kv.get("localhost", NUMBER, "phone") is not None


async def test_deleting_the_account_forgets_the_number(server: Server, hook: Webhook, http: aiohttp.ClientSession) -> None:
    await ask_code(http, server)
    assert (await set_password(http, server, last_code(hook)))[0] == 201
    assert await server.delete_account("localhost", NUMBER)
    assert await server.storage.kv.get("localhost", NUMBER, "phone") is None


async def test_a_code_sent_by_one_node_is_checked_by_another(tmp_path: Path, hook: Webhook,
                                                             http: aiohttp.ClientSession) -> None:
    """Two nodes on one PostgreSQL schema: codes, guesses and limits are the storage's, not a node's."""
    async with postgres_schema() as (url, _, _):
        storage = {"url": url}
        modules = phone_modules(hook.url)
        async with (
            running(tmp_path / "a", listen=True, modules=modules, storage=storage) as node_a,
            running(tmp_path / "b", listen=True, modules=modules, storage=storage) as node_b,
        ):
            assert (await ask_code(http, node_a)).status == 200
            # The minute holds on the other node too.
            assert (await ask_code(http, node_b)).status == 429
            code = last_code(hook)
            assert (await set_password(http, node_b, wrong(code)))[0] == 401
            assert (await set_password(http, node_a, wrong(code)))[0] == 401
            assert (await set_password(http, node_b, wrong(code)))[0] == 429
            assert (await set_password(http, node_a, code))[0] == 404
            # A fresh code for the other number, sent by b and used on a.
            assert (await ask_code(http, node_b, OTHER)).status == 200
            assert (await set_password(http, node_a, last_code(hook, OTHER), OTHER))[0] == 201
            client = SlixClient(node_b, f"{OTHER}@localhost", PASSWORD)
            try:
                assert await client.start()
            finally:
                await client.stop()


async def discover(client: SlixClient, numbers: list[str], ver: str | None = None) -> Element:
    """A raw phone-book IQ get (Quicksy's im.quicksy.synchronization:0) to the domain; its result."""
    iq = client.xmpp.make_iq_get(ito="localhost")
    iq.append(PhoneBook(tuple(Entry(number) for number in numbers), ver).to_xml())
    result = await iq.send(timeout=10)
    xml: Element = result.xml
    return xml


async def verified(http: aiohttp.ClientSession, server: Server, hook: Webhook, number: str) -> None:
    assert (await ask_code(http, server, number)).status == 200
    assert (await set_password(http, server, last_code(hook, number), number))[0] == 201


@pytest.fixture
async def alice(server: Server) -> AsyncIterator[SlixClient]:
    await add_user(server, "alice", PASSWORD)
    client = SlixClient(server, "alice@localhost", PASSWORD)
    try:
        assert await client.start()
        yield client
    finally:
        await client.stop()


async def test_discovery_finds_verified_numbers_only(
        server: Server, hook: Webhook, http: aiohttp.ClientSession, alice: SlixClient) -> None:
    await verified(http, server, hook, NUMBER)
    await add_user(server, OTHER, PASSWORD)  # made by the admin: not verified
    assert (await ask_code(http, server, THIRD)).status == 200  # a code sent, never used
    unknown = "+4915723456789"
    result = await discover(alice, [NUMBER, OTHER, THIRD, unknown, NUMBER])
    book = result.find(PHONE_BOOK)
    assert book is not None, serialize(result)
    answer = PhoneBook.from_xml(book)
    assert answer.entries == (Entry(NUMBER, (Address(NUMBER, "localhost"),)),)
    assert answer.ver == answer_hash(answer.entries)
    # The client holds that answer: asking again with its ver costs an empty result.
    again = await discover(alice, [NUMBER, OTHER, THIRD, unknown], answer.ver)
    assert again.get("type") == "result" and len(again) == 0
    # Once the account is gone, so is the answer.
    assert await server.delete_account("localhost", NUMBER)
    gone = await discover(alice, [NUMBER], answer.ver)
    book = gone.find(PHONE_BOOK)
    assert book is not None and PhoneBook.from_xml(book).entries == ()


async def test_the_numbers_looked_up_are_forgotten_after_their_day(
        server: Server, hook: Webhook, http: aiohttp.ClientSession, alice: SlixClient) -> None:
    """Only hashes of the numbers an account looked up are kept, to count them, and only for
    their UTC day: also when the account looks nothing up any more."""
    await discover(alice, [NUMBER, OTHER])
    assert len(await server.storage.maps.items("localhost", "alice", BOOK)) == 2
    module = server.modules["phone"]
    assert isinstance(module, Phone)
    # Not before the day is over.
    await module.sweep()
    assert len(await server.storage.maps.items("localhost", "alice", BOOK)) == 2
    assert await module.sweep(time.time() + DAY) >= 1
    assert await server.storage.maps.items("localhost", "alice", BOOK) == {}
    assert f"{BOOK}/alice@localhost" not in await server.storage.maps.items("localhost", "", SWEEP)


async def test_discovery_is_advertised_in_the_domains_disco_info(server: Server, alice: SlixClient) -> None:
    iq = alice.xmpp.make_iq_get(ito="localhost")
    iq.append(DiscoInfo().to_xml())
    result = await iq.send(timeout=10)
    info = DiscoInfo.from_xml(result.xml.find(INFO))
    assert NS in info.features


async def test_discovery_of_a_malformed_phone_book_is_bad_request(server: Server, alice: SlixClient) -> None:
    iq = alice.xmpp.make_iq_get(ito="localhost")
    iq.append(element(PHONE_BOOK, children=[element(ENTRY, {"number": "0151 2345 6789"})]))
    with pytest.raises(IqError) as err:
        await iq.send(timeout=10)
    assert err.value.iq["error"]["condition"] == "bad-request"
    assert "E.164" in err.value.iq["error"]["text"]


async def test_discovery_allows_so_many_numbers_a_day(tmp_path: Path, hook: Webhook) -> None:
    # slixmpp knows no policy-violation (RFC 6120 §8.3.3.12): a raw client reads this error.
    async with running(tmp_path, listen=True, modules=phone_modules(hook.url, discovery_limit=3)) as server:
        await add_user(server, "alice", SLIX_PASSWORD)
        wire = await logged_in(server)

        async def ask(numbers: list[str]) -> Element:
            book = serialize(PhoneBook(tuple(Entry(number) for number in numbers)).to_xml())
            return await ask_raw(wire, f"<iq type='get' id='book' to='localhost'>{book}</iq>")

        try:
            assert (await ask([NUMBER, OTHER])).get("type") == "result"
            # The same numbers again count nothing more; a third one is still allowed.
            assert (await ask([NUMBER, OTHER, THIRD])).get("type") == "result"
            refused = await ask([NUMBER, "+4915723456789"])
            assert condition(refused) == "policy-violation"
            text = refused.find(f"{{{ns.CLIENT}}}error/{{{ns.STANZA_ERRORS}}}text")
            assert text is not None and text.text is not None
            assert re.fullmatch(r"at most 3 numbers a day may be looked up; try again in [0-9]+ s", text.text)
            assert (await ask([THIRD])).get("type") == "result"
        finally:
            wire.close()


async def test_a_new_phone_ends_the_old_phones_session_on_another_node(
        tmp_path: Path, hook: Webhook, http: aiohttp.ClientSession) -> None:
    """Two nodes on one PostgreSQL and Redis: the account is re-keyed through node a while the old
    phone is logged in on node b, and the new phone logs in on b at once; b ends the old session
    (it hears of the change on the bus) and keeps the new one."""
    async with two_nodes(tmp_path, hook, sms_interval=0) as (node_a, node_b, _, _):
        await ask_code(http, node_a)
        assert (await set_password(http, node_a, last_code(hook)))[0] == 201
        old_phone = SlixClient(node_b, f"{NUMBER}@localhost", PASSWORD)
        new_phone = SlixClient(node_b, f"{NUMBER}@localhost", "the new phone's password")
        try:
            assert await old_phone.start()
            await ask_code(http, node_b)
            assert (await set_password(http, node_a, last_code(hook), password="the new phone's password"))[0] == 200
            assert await new_phone.start()
            async with asyncio.timeout(20):
                await old_phone.disconnected.wait()
            assert old_phone.stream_errors == ["not-authorized"]
            # The new phone's session, made with the new password, stays.
            await new_phone.xmpp.plugin["xep_0199"].ping(jid=JID("localhost"), timeout=10)
            assert not new_phone.disconnected.is_set()
        finally:
            await old_phone.stop()
            await new_phone.stop()
