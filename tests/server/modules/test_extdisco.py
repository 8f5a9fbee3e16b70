"""XEP-0215 External Service Discovery: services, types, credentials in coturn's REST scheme, errors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import pytest

from schnack.server.config import ConfigError
from schnack.server.modules.extdisco import ExtdiscoOptions, coturn_config, turn_credentials
from schnack.xmpp import ns
from schnack.xmpp.payloads.disco import INFO, DiscoInfo
from schnack.xmpp.payloads.extdisco import CREDENTIALS, NS, SERVICES, Credentials, Service, Services

from ...harness import Client, running
from .messaging import condition, login

SECRET = "s3cret-shared-with-coturn"
MODULES: dict[str, Any] = {
    "enable": ["extdisco"],
    "extdisco": {
        "stun_host": "stun.localhost", "stun_port": 3478, "turn_host": "turn.localhost", "turn_port": 3479,
        "turn_transports": ["udp", "tcp"], "turns_port": 5349, "secret": SECRET, "lifetime": 600,
    },
}  # fmt: skip
IQ = f"{{{ns.CLIENT}}}iq"


async def ask(client: Client, payload: str, to: str = "localhost") -> Element:
    await client.send(f"<iq type='get' id='x1' to='{to}'>{payload}</iq>")
    (reply,) = [el for el in client.take() if el.tag == IQ and el.get("id") == "x1"]
    return reply


def expected_password(username: str) -> str:
    """The password coturn derives for ``username`` (TURN REST: base64 of HMAC-SHA1)."""
    return base64.b64encode(hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()).decode()


async def test_all_services(tmp_path: Path) -> None:
    async with running(tmp_path, modules=MODULES) as server:
        alice = await login(server, "alice@localhost/phone")
        before = int(time.time())
        reply = await ask(alice, f"<services xmlns='{NS}'/>")
        after = int(time.time())
        assert reply.get("type") == "result"
        payload = reply.find(SERVICES)
        assert payload is not None
        services = Services.from_xml(payload).services
        assert [(s.type, s.host, s.port, s.transport) for s in services] == [
            ("stun", "stun.localhost", 3478, "udp"),
            ("turn", "turn.localhost", 3479, "udp"),
            ("turn", "turn.localhost", 3479, "tcp"),
            ("turns", "turn.localhost", 5349, "tcp"),
        ]
        stun, *turns = services
        assert stun.username is None and stun.password is None and not stun.restricted
        for turn in turns:
            assert turn.restricted and turn.username is not None and turn.expires is not None
            expiry, _, user = turn.username.partition(":")
            assert user == "alice@localhost"
            assert before + 600 <= int(expiry) <= after + 600
            assert int(turn.expires.timestamp()) == int(expiry)
            assert turn.password == expected_password(turn.username)


async def test_services_of_one_type(tmp_path: Path) -> None:
    async with running(tmp_path, modules=MODULES) as server:
        alice = await login(server, "alice@localhost/phone")
        payload = (await ask(alice, f"<services xmlns='{NS}' type='stun'/>")).find(SERVICES)
        assert payload is not None
        parsed = Services.from_xml(payload)
        assert parsed.type == "stun" and [s.type for s in parsed.services] == ["stun"]
        payload = (await ask(alice, f"<services xmlns='{NS}' type='ftp'/>")).find(SERVICES)
        assert payload is not None and Services.from_xml(payload).services == ()


async def test_credentials(tmp_path: Path) -> None:
    async with running(tmp_path, modules=MODULES) as server:
        bob = await login(server, "bob@localhost/desk")
        reply = await ask(bob, f"<credentials xmlns='{NS}'><service type='turn' host='turn.localhost'/></credentials>")
        payload = reply.find(CREDENTIALS)
        assert payload is not None
        services = Credentials.from_xml(payload).services
        assert [(s.transport, s.port) for s in services] == [("udp", 3479), ("tcp", 3479)]
        for service in services:
            assert service.username is not None and service.username.endswith(":bob@localhost")
            assert service.password == expected_password(service.username)
        reply = await ask(bob, f"<credentials xmlns='{NS}'><service type='turns' host='turn.localhost' port='5349'/></credentials>")
        payload = reply.find(CREDENTIALS)
        assert payload is not None and len(Credentials.from_xml(payload).services) == 1


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (f"<credentials xmlns='{NS}'><service type='turn' host='elsewhere.example'/></credentials>", "item-not-found"),
        (f"<credentials xmlns='{NS}'><service type='turn' host='turn.localhost' port='1'/></credentials>", "item-not-found"),
        (f"<credentials xmlns='{NS}'/>", "bad-request"),
        (f"<credentials xmlns='{NS}'><service host='turn.localhost'/></credentials>", "bad-request"),
        (f"<credentials xmlns='{NS}'><service type='turn' host='turn.localhost' port='http'/></credentials>", "bad-request"),
        # Digits Python's int() does not read (superscript two).
        (f"<credentials xmlns='{NS}'><service type='turn' host='turn.localhost' port='\u00b2'/></credentials>",
         "bad-request"),
        (f"<services xmlns='{NS}'><service type='turn' host='h' transport='sctp'/></services>", "bad-request"),
    ],
)
async def test_bad_requests(tmp_path: Path, payload: str, expected: str) -> None:
    async with running(tmp_path, modules=MODULES) as server:
        alice = await login(server, "alice@localhost/phone")
        assert condition(await ask(alice, payload)) == expected
        # The server goes on serving.
        assert (await ask(alice, f"<services xmlns='{NS}'/>")).get("type") == "result"


async def test_set_is_not_implemented_and_feature_is_announced(tmp_path: Path) -> None:
    async with running(tmp_path, modules=MODULES) as server:
        alice = await login(server, "alice@localhost/phone")
        await alice.send(f"<iq type='set' id='x1' to='localhost'><services xmlns='{NS}'/></iq>")
        (reply,) = alice.take()
        assert condition(reply) == "feature-not-implemented"
        info = (await ask(alice, f"<query xmlns='{ns.DISCO_INFO}'/>")).find(INFO)
        assert info is not None and NS in DiscoInfo.from_xml(info).features


async def test_stun_only(tmp_path: Path) -> None:
    modules = {"enable": ["extdisco"], "extdisco": {"stun_host": "192.0.2.1"}}
    async with running(tmp_path, modules=modules) as server:
        alice = await login(server, "alice@localhost/phone")
        payload = (await ask(alice, f"<services xmlns='{NS}'/>")).find(SERVICES)
        assert payload is not None
        assert Services.from_xml(payload).services == (Service("stun", "192.0.2.1", 3478, "udp"),)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({}, "modules.extdisco"),
        ({"turn_host": "turn.localhost"}, "modules.extdisco.secret"),
        ({"turn_host": "turn.localhost", "secret": "short"}, "modules.extdisco.secret"),
        ({"turn_host": "t", "secret": SECRET, "turn_transports": ["sctp"]}, "modules.extdisco.turn_transports[0]"),
        ({"turn_host": "t", "secret": SECRET, "turn_transports": []}, "modules.extdisco.turn_transports"),
        ({"stun_host": "s", "lifetime": 10}, "modules.extdisco.lifetime"),
    ],
)
async def test_bad_options(tmp_path: Path, options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        async with running(tmp_path, modules={"enable": ["extdisco"], "extdisco": options}):
            pass
    assert info.value.key == key


def test_turn_credentials_follow_the_rest_scheme() -> None:
    username, password = turn_credentials(SECRET, "alice@localhost", 1_900_000_000)
    assert username == "1900000000:alice@localhost"
    assert password == expected_password(username)


def test_coturn_config_matches_the_options() -> None:
    options = ExtdiscoOptions(turn_host="turn.example.org", turn_port=3479, secret=SECRET, turn_transports=["udp"])
    text = coturn_config(options, ["example.org"])
    lines = text.splitlines()
    assert "listening-port=3479" in lines and "realm=example.org" in lines
    assert "use-auth-secret" in lines and f"static-auth-secret={SECRET}" in lines
    assert "no-tcp" in lines and "denied-peer-ip=10.0.0.0-10.255.255.255" in lines
    assert "listening-ip=127.0.0.1" not in lines
    local = coturn_config(options, ["example.org"], loopback=True).splitlines()
    assert "listening-ip=127.0.0.1" in local and not any(line.startswith("denied-peer-ip") for line in local)
