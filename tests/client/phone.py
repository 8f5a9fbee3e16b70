"""Phone-number accounts in client tests: a real server with the phone module, whose SMS go to a
webhook on a real local port, and numbers signed up through its HTTP API as an app does."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from schnack.client.phone_signup import PhoneSignup, new_password
from schnack.server.app import Server

from ..harness import running
from ..server.sms_receiver import Webhook, webhook

WAIT = 30


@contextlib.asynccontextmanager
async def phone_server(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[Server, Webhook]]:
    """A listening server that lets plaintext through, signing up numbers with codes sent to the
    webhook; ``options`` are more of ``[modules.phone]``."""
    async with webhook() as hook, running(
        tmp_path, listen=True,
        modules={"enable": ["phone"], "e2e": {"policy": "optional"},
                 "phone": {"sms": "http", "sms_url": hook.url, **options}},
    ) as server:
        yield server, hook


def api(server: Server) -> str:
    """The sign-up API on the server's HTTPS listener."""
    host, port = server.bound["https"][0]
    return f"https://{host}:{port}/phone"


def certificate(server: Server) -> Path:
    """The server's self-signed certificate, to trust as a CA."""
    return server.config.data_dir / "certs" / "server.crt"


async def next_code(hook: Webhook, seen: int) -> str:
    """The code of the SMS after the first ``seen`` the webhook got, once it arrived."""
    async with asyncio.timeout(WAIT):
        while len(hook.received) <= seen:  # noqa: ASYNC110 (the webhook keeps a list)
            await asyncio.sleep(0.02)
    found = re.search(r"\b[0-9]{6}\b", hook.texts[seen])
    assert found is not None, hook.texts[seen]
    return found[0]


async def sign_up(server: Server, hook: Webhook, number: str) -> str:
    """Sign ``number`` up on ``server`` as an app does; its password."""
    signup = PhoneSignup(api(server), number, verify=certificate(server))
    seen = len(hook.received)
    await signup.request_code()
    password = new_password()
    await signup.set_password(await next_code(hook, seen), password)
    return password
