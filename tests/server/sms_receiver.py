"""An SMS webhook on a real local port, as a relay in front of an SMS provider would take it:
it keeps what it received and answers with the status a test chose."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    """One request the webhook got."""

    json: Any
    authorization: str | None


@dataclass
class Webhook:
    """The receiver: ``url`` to give the gateway, what arrived, and how to answer."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    status: int = 200
    # Seconds to wait before answering, to let a gateway's timeout run out.
    delay: float = 0.0

    @property
    def texts(self) -> list[str]:
        return [item.json["text"] for item in self.received]

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(Received(json.loads(await request.read()), request.headers.get("Authorization")))
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status, text="queued\n" if self.status < 300 else "provider refused\n")


@contextlib.asynccontextmanager
async def webhook() -> AsyncIterator[Webhook]:
    """A running webhook on 127.0.0.1 at ``/sms``."""
    hook = Webhook()
    app = web.Application()
    app.router.add_post("/sms", hook.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hook.url = f"http://127.0.0.1:{port}/sms"
    try:
        yield hook
    finally:
        await runner.cleanup()
