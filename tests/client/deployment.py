"""A deployment as ``schnack admin check`` expects one: our server with its default modules, TURN
credentials (extdisco) served by a real coturn, STARTTLS, direct TLS and HTTPS (upload)
listeners, and two accounts; and the compliance settings to check it with its own certificate."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from bench.ports import free_port
from schnack.client.compliance import Account, Settings
from schnack.server.app import Server
from schnack.server.modules.extdisco import ExtdiscoOptions, coturn_config
from schnack.xmpp.jid import JID

from ..harness import add_user, running
from ..integration.coturn import ready, require_coturn, turnserver

PASSWORD = "correct horse battery staple"


@contextlib.asynccontextmanager
async def deployment(tmp_path: Path, *, relay_secret: str | None = None, **modules: object) -> AsyncIterator[Server]:
    """The running server (``modules`` added to its [modules]) with alice and bob, and coturn
    (with another secret than the server's if ``relay_secret`` says so)."""
    require_coturn()
    port = free_port(udp=True)
    secret = secrets.token_urlsafe(24)
    extdisco = {"turn_host": "127.0.0.1", "turn_port": port, "secret": secret}
    relay_options = ExtdiscoOptions(turn_host="127.0.0.1", turn_port=port, secret=relay_secret or secret)
    relay = coturn_config(relay_options, ["localhost"], loopback=True)
    with turnserver(relay, tmp_path / "coturn") as process:
        await ready(process, port, tmp_path / "coturn" / "turnserver.log")
        config = {"enable": ["extdisco"], "extdisco": extdisco, **modules}
        async with running(tmp_path, listen=True, modules=config) as server:
            for user in ("alice", "bob"):
                await add_user(server, user, PASSWORD)
            yield server


def settings_for(server: Server) -> Settings:
    """alice and bob on ``server``'s listeners, trusting only its certificate."""
    host, port = server.bound["c2s"][0]
    tls_host, tls_port = server.bound["c2s_tls"][0]
    return Settings(Account(JID.parse("alice@localhost"), PASSWORD), Account(JID.parse("bob@localhost"), PASSWORD),
                    server=(host, port), direct_tls=(tls_host, tls_port), verify=server.tls.cert_path)
