"""Signing up by phone number over the server's HTTP API (client/phone_signup.py), against the
real server: the SMS reaches a webhook, the code it carries sets the password, and each refusal
is a sentence."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schnack.client import AuthenticationError, CertificateError, Client, ConnectError
from schnack.client.phone_signup import PhoneSignup, SignupError, WrongCode, new_password
from schnack.server.app import Server
from schnack.server.modules.phone import Phone

from ..harness import running
from ..server.sms_receiver import webhook
from ..server.storage.conftest import postgres_schema, with_query
from .conftest import make_client
from .phone import api, certificate, next_code, phone_server
from .proxy import Proxy

NUMBER = "+4915123456789"


async def test_sign_up_and_sign_up_again(tmp_path: Path, clients: list[Client]) -> None:
    async with phone_server(tmp_path, sms_interval=0) as (server, hook):
        signup = PhoneSignup(api(server), NUMBER, verify=certificate(server))
        await signup.request_code()
        assert hook.received[0].json["to"] == NUMBER
        first = new_password()
        assert await signup.set_password(await next_code(hook, 0), first) is True
        phone = make_client(server, f"{NUMBER}@localhost", password=first, reconnect=False)
        await phone.connect()
        clients.append(phone)
        # A new phone: the same number proves itself again, and the account gets a new password.
        again = PhoneSignup(api(server) + "/", NUMBER, verify=certificate(server))
        await again.request_code()
        second = new_password()
        assert await again.set_password(await next_code(hook, 1), second) is False
        with pytest.raises(AuthenticationError):
            await make_client(server, f"{NUMBER}@localhost", password=first, reconnect=False).connect()
        new_phone = make_client(server, f"{NUMBER}@localhost", password=second, reconnect=False)
        await new_phone.connect()
        clients.append(new_phone)


@contextlib.asynccontextmanager
async def relayed(tmp_path: Path) -> AsyncIterator[tuple[Server, Proxy, PhoneSignup, str]]:
    """A server, a relay to it, a sign-up through the relay, and the code it asked for. Plain
    HTTP, which the server takes from this machine, so that the relay sees the answers."""
    async with phone_server(tmp_path) as (server, hook):
        host, port = server.bound["http"][0]
        proxy = await Proxy(host, port).start()
        try:
            signup = PhoneSignup(f"http://127.0.0.1:{proxy.port}/phone", NUMBER, verify=False)
            await signup.request_code()
            yield server, proxy, signup, await next_code(hook, 0)
            assert len(hook.received) == 1
        finally:
            await proxy.stop()


@pytest.mark.parametrize("lost", [1, 2])
async def test_a_password_whose_answer_was_lost_is_sent_again(tmp_path: Path, clients: list[Client],
                                                              lost: int) -> None:
    """The connection drops after the password went out, before the answer came (here the relay
    drops it when the server answers): the same request is sent again, and its answer, the
    first one's, arrives; no new code is needed, and the account has the password."""
    async with relayed(tmp_path) as (server, proxy, signup, code):
        proxy.losing_answers = lost
        password = new_password()
        assert await signup.set_password(code, password) is True
        assert (proxy.losing_answers, proxy.connections) == (0, 2 + lost)
        phone = make_client(server, f"{NUMBER}@localhost", password=password, reconnect=False)
        await phone.connect()
        clients.append(phone)


async def test_answers_lost_again_and_again_are_a_connection_error(tmp_path: Path) -> None:
    async with relayed(tmp_path) as (_server, proxy, signup, code):
        proxy.losing_answers = 3
        with pytest.raises(ConnectError, match=rf"^cannot reach http://127.0.0.1:{proxy.port}/phone/password: "):
            await signup.set_password(code, new_password())
        assert proxy.connections == 4


async def test_a_password_storage_could_not_save_is_sent_again_after_the_wait_asked(tmp_path: Path) -> None:
    """The server answers 503 with Retry-After (here PostgreSQL holds up the accounts table, behind
    a lock another connection holds, until the first try failed): after the wait the same request
    goes again and makes the account."""
    failed = asyncio.Event()

    class Failures(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            failed.set()

    logger = logging.getLogger(Phone.__module__)
    handler = Failures(logging.ERROR)
    logger.addHandler(handler)
    try:
        async with (postgres_schema() as (url, schema, admin), webhook() as hook,
                    running(tmp_path, listen=True, storage={"url": with_query(url, command_timeout="1")},
                            modules={"enable": ["phone"], "phone": {"sms": "http", "sms_url": hook.url}}) as server):
            signup = PhoneSignup(api(server), NUMBER, verify=certificate(server))
            await signup.request_code()
            code = await next_code(hook, 0)
            async with admin.transaction():
                await admin.execute(f'LOCK TABLE "{schema}".accounts IN ACCESS EXCLUSIVE MODE')
                trying = asyncio.ensure_future(signup.set_password(code, new_password()))
                async with asyncio.timeout(30):
                    await failed.wait()
            assert await trying is True
    finally:
        logger.removeHandler(handler)


async def test_refusals_are_sentences(tmp_path: Path) -> None:
    async with phone_server(tmp_path, code_attempts=2) as (server, hook):
        signup = PhoneSignup(api(server), NUMBER, verify=certificate(server))
        await signup.request_code()
        code = await next_code(hook, 0)
        wrong = f"{(int(code) + 1) % 10**6:06d}"
        with pytest.raises(WrongCode, match=r"^wrong code$"):
            await signup.set_password(wrong, new_password())
        with pytest.raises(SignupError, match=r"too many wrong codes: this one no longer works; ask for a new one,"
                                              r" try again in \d+ s") as void:
            await signup.set_password(wrong, new_password())
        assert void.value.status == 429 and void.value.retry_after is not None
        # The code is void now, the right one too.
        with pytest.raises(SignupError, match=r"^the code has expired, was used, or was never sent to"):
            await signup.set_password(code, new_password())
        with pytest.raises(SignupError, match=rf"^too many codes asked for \{NUMBER}: try again in \d+ s$") as limited:
            await signup.request_code()
        assert limited.value.status == 429
        never = PhoneSignup(api(server), "+4915123456780", verify=certificate(server))
        with pytest.raises(SignupError, match=r"^the code has expired, was used, or was never sent to") as missing:
            await never.set_password("123456", new_password())
        assert missing.value.status == 404
        # A number no plan assigns is refused by the server with its reason.
        with pytest.raises(SignupError, match=r"^the server refused the request: "):
            await PhoneSignup(api(server), "+999123", verify=certificate(server)).request_code()
        hook.status = 503
        with pytest.raises(SignupError, match=r"^the server could not send the SMS \(.*\): try again later$"):
            await PhoneSignup(api(server), "+4915123456781", verify=certificate(server)).request_code()


async def test_the_server_must_be_trusted_and_serve_the_api(tmp_path: Path) -> None:
    async with phone_server(tmp_path) as (server, hook):
        with pytest.raises(CertificateError, match=r"^the certificate of 127.0.0.1 is not trusted: .*verify=False"):
            await PhoneSignup(api(server), NUMBER).request_code()
        assert hook.received == []
    async with running(tmp_path / "off", listen=True) as server:
        with pytest.raises(SignupError, match=rf"^{api(server)} does not sign up phone numbers \(HTTP 404\)"):
            await PhoneSignup(api(server), NUMBER, verify=False).request_code()
        host, port = server.bound["http"][0]
        with pytest.raises(ConnectError, match=rf"^cannot reach https://{host}:{port}/phone/authentication/"):
            await PhoneSignup(f"https://{host}:{port}/phone", NUMBER, verify=False).request_code()
    with pytest.raises(ValueError, match=r"E.164"):
        PhoneSignup("https://localhost/phone", "0151 23456789")


async def test_a_server_that_does_not_answer_is_named_with_the_systems_reason() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port now: the connection is refused.
    with pytest.raises(ConnectError) as refused:
        await PhoneSignup(f"https://127.0.0.1:{port}/phone", NUMBER, verify=False).request_code()
    assert str(refused.value) == f"cannot reach https://127.0.0.1:{port}/phone/authentication/{NUMBER}: Connection refused"
