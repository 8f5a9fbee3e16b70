"""XEP-0215 against the real coturn: the TURN credentials schnack hands out (fetched by slixmpp)
allocate a relay at coturn configured by ``schnack admin turn-config``; wrong or expired ones get 401."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint
from slixmpp.xmlstream import ET

from bench.ports import free_port
from schnack.server.modules.extdisco import turn_credentials
from schnack.xmpp.payloads.extdisco import SERVICES, Service, Services

from ..harness import add_user, running
from .coturn import ready, require_coturn, turn_config_for, turnserver
from .slix import PASSWORD, SlixClient


async def allocate(service: Service, username: str, password: str) -> tuple[str, int]:
    """A TURN Allocate (RFC 8656 §7.1) with long-term credentials; the relayed address."""
    assert service.port is not None and service.transport is not None
    transport, _ = await create_turn_endpoint(
        asyncio.DatagramProtocol, (service.host, service.port), username, password, transport=service.transport
    )
    try:
        relayed: tuple[str, int] = transport.get_extra_info("sockname")
        return relayed
    finally:
        transport.close()


async def refused(service: Service, username: str, password: str) -> int:
    """The STUN error code coturn answers an Allocate with these credentials."""
    with pytest.raises(stun.TransactionFailed) as info:
        await allocate(service, username, password)
    code: int = info.value.response.attributes["ERROR-CODE"][0]
    return code


async def fetch_services(client: SlixClient) -> tuple[Service, ...]:
    """XEP-0215 §3.1 by slixmpp, as a raw IQ (slixmpp has no XEP-0215 plugin)."""
    iq: Any = client.xmpp.make_iq_get(ito="localhost")
    iq.append(ET.Element(SERVICES))
    result = await iq.send(timeout=30)
    payload = result.xml.find(SERVICES)
    assert payload is not None
    return Services.from_xml(payload).services


async def test_coturn_accepts_the_credentials_we_hand_out(tmp_path: Path) -> None:
    require_coturn()
    port = free_port(udp=True)
    secret = secrets.token_urlsafe(24)
    modules = {
        "enable": ["extdisco"],
        "extdisco": {"turn_host": "127.0.0.1", "turn_port": port, "turn_transports": ["udp", "tcp"],
                     "secret": secret, "lifetime": 600},
    }  # fmt: skip
    with turnserver(turn_config_for(tmp_path / "schnack.toml", port, secret), tmp_path / "coturn") as process:
        await ready(process, port, tmp_path / "coturn" / "turnserver.log")
        await check_credentials(tmp_path, modules, secret)


async def check_credentials(tmp_path: Path, modules: dict[str, Any], secret: str) -> None:
    """Fetch the services over XMPP and use them at coturn."""
    async with running(tmp_path, listen=True, modules=modules) as server:
        await add_user(server, "alice", PASSWORD)
        client = SlixClient(server, "alice@localhost/phone")
        assert await client.start()
        try:
            services = await fetch_services(client)
        finally:
            await client.stop()
        assert {s.transport for s in services} == {"udp", "tcp"}
        for service in services:
            assert service.type == "turn" and service.restricted
            assert service.username is not None and service.password is not None
            relayed = await allocate(service, service.username, service.password)
            assert relayed[0] == "127.0.0.1" and relayed[1] > 0
            assert await refused(service, service.username, "not-the-password") == 401
        expired, password = turn_credentials(secret, "alice@localhost", int(time.time()) - 60)
        assert await refused(services[0], expired, password) == 401
