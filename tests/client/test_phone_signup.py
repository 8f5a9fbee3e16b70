"""Signing up by phone number over the server's HTTP API (client/phone_signup.py), against the
real server: the SMS reaches a webhook, the code it carries sets the password, and each refusal
is a sentence."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from schnack.client import AuthenticationError, CertificateError, Client, ConnectError
from schnack.client.phone_signup import PhoneSignup, SignupError, WrongCode, new_password

from ..harness import running
from .conftest import make_client
from .phone import api, certificate, next_code, phone_server

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
