"""XEP-0114 components in memory: handshake, its stream errors, routing both ways, and what happens while none is connected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from schnack.server.app import Server
from schnack.server.component import ACCEPT
from schnack.server.config import ConfigError
from schnack.xmpp import ns
from schnack.xmpp.xml import qname

from ..harness import make_config, running, xml
from .components import MemoryComponent, accept, open_component
from .modules.contacts import presence
from .modules.messaging import body, chat, condition, login

DOMAIN = "push.localhost"
SECRET = "s3cr3t"
COMPONENTS: dict[str, Any] = {"components": {DOMAIN: {"secret": SECRET}, "other.localhost": {"secret": "x"}}}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(tmp_path, modules={"e2e": {"policy": "optional"}}, **COMPONENTS) as srv:
        yield srv


async def connected(server: Server) -> MemoryComponent:
    component = await open_component(server, DOMAIN, SECRET)
    assert [el.tag for el in component.take()] == [qname(ACCEPT, "handshake")]
    return component


async def test_header_names_the_domain(server: Server) -> None:
    component = await connected(server)
    assert component.conn.header is not None
    assert component.conn.header["from"] == DOMAIN
    assert component.conn.header["id"] == component.stream.id
    assert server.components.connected[DOMAIN] is component.stream


@pytest.mark.parametrize(
    ("secret", "condition"),
    [("wrong", "not-authorized"), ("", "not-authorized")],
)
async def test_bad_handshake(server: Server, secret: str, condition: str) -> None:
    component = await open_component(server, DOMAIN, secret)
    assert component.stream_error() == condition
    assert DOMAIN not in server.components.connected


async def test_stanza_before_handshake_is_not_authorized(server: Server) -> None:
    component = await open_component(server, DOMAIN)
    await component.send(f"<message xmlns='{ACCEPT}' from='{DOMAIN}' to='bob@localhost'><body>x</body></message>")
    assert component.stream_error() == "not-authorized"


async def test_unconfigured_domain_is_host_unknown(server: Server) -> None:
    component = await open_component(server, "elsewhere.localhost", SECRET)
    assert component.stream_error() == "host-unknown"


async def test_second_component_for_a_domain_is_a_conflict(server: Server) -> None:
    first = await connected(server)
    second = await open_component(server, DOMAIN, SECRET)
    assert second.stream_error() == "conflict"
    assert server.components.connected[DOMAIN] is first.stream


@pytest.mark.parametrize("from_", ["bob@localhost", "other.localhost", "x@sub.push.localhost", ""])
async def test_from_outside_the_domain_is_invalid_from(server: Server, from_: str) -> None:
    component = await connected(server)
    sender = f" from='{from_}'" if from_ else ""
    await component.send(f"<message xmlns='{ACCEPT}'{sender} to='bob@localhost'><body>x</body></message>")
    assert component.stream_error() == "invalid-from"
    assert DOMAIN not in server.components.connected


async def test_stanza_without_to_is_improper_addressing(server: Server) -> None:
    component = await connected(server)
    await component.send(f"<message xmlns='{ACCEPT}' from='{DOMAIN}'><body>x</body></message>")
    assert component.stream_error() == "improper-addressing"


async def test_unknown_element_after_handshake(server: Server) -> None:
    component = await connected(server)
    await component.send("<foo xmlns='urn:example'/>")
    assert component.stream_error() == "unsupported-stanza-type"


async def test_bad_iq_gets_a_stanza_error_and_the_stream_goes_on(server: Server) -> None:
    component = await connected(server)
    await component.send(f"<iq xmlns='{ACCEPT}' from='{DOMAIN}' to='localhost' type='get' id='q1'/>")
    await component.send(f"<iq xmlns='{ACCEPT}' from='{DOMAIN}' to='a@b@c' type='get' id='q2'><ping xmlns='urn:xmpp:ping'/></iq>")
    first, second = component.take()
    assert (first.get("id"), first.get("type")) == ("q1", "error")
    assert (second.get("id"), second.get("type")) == ("q2", "error")
    assert server.components.connected[DOMAIN] is component.stream


async def test_stanzas_to_the_domain_reach_the_component(server: Server) -> None:
    component = await connected(server)
    bob = await login(server, "bob@localhost/phone")
    await bob.send(chat(f"app@{DOMAIN}/x", "to the component"))
    await bob.send(f"<iq type='get' id='d1' to='{DOMAIN}'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    message, iq = component.take()
    assert message.tag == accept("message")
    assert message.get("from") == "bob@localhost/phone" and message.get("to") == f"app@{DOMAIN}/x"
    assert message.findtext(accept("body")) == "to the component"
    assert iq.tag == accept("iq") and iq.get("type") == "get"
    # The component answers; the answer reaches the client.
    await component.send(
        f"<iq xmlns='{ACCEPT}' type='result' id='d1' from='{DOMAIN}' to='bob@localhost/phone'>"
        f"<query xmlns='{ns.DISCO_INFO}'><identity category='pubsub' type='push'/></query></iq>"
    )
    (answer,) = bob.take()
    assert answer.get("type") == "result" and answer.get("from") == DOMAIN, xml(answer)


async def test_component_messages_reach_users(server: Server) -> None:
    component = await connected(server)
    bob = await login(server, "bob@localhost/phone")
    await bob.send(presence())
    bob.take()
    await component.send(
        f"<message xmlns='{ACCEPT}' from='bot@{DOMAIN}' to='bob@localhost' type='chat'><body>hello</body></message>"
    )
    (message,) = bob.take()
    assert message.tag == qname(ns.CLIENT, "message") and body(message) == "hello"
    assert message.get("from") == f"bot@{DOMAIN}"


async def test_errors_for_the_component_go_back_to_it(server: Server) -> None:
    component = await connected(server)
    await component.send(
        f"<message xmlns='{ACCEPT}' from='bot@{DOMAIN}' to='nobody@localhost' type='chat'><body>x</body></message>"
    )
    (error,) = component.take()
    assert error.tag == accept("message") and error.get("type") == "error"
    assert error.find(f"{accept('error')}/{{{ns.STANZA_ERRORS}}}service-unavailable") is not None


async def test_not_connected_domain_is_service_unavailable(server: Server) -> None:
    bob = await login(server, "bob@localhost/phone")
    await bob.send(chat(f"app@{DOMAIN}", "anyone?"))
    await bob.send(f"<iq type='get' id='d1' to='{DOMAIN}'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    await bob.send(f"<presence to='{DOMAIN}'/>")
    message, iq = bob.take()
    assert condition(message) == "service-unavailable"
    assert condition(iq) == "service-unavailable"


async def test_unconfigured_domain_is_remote_server_not_found(server: Server) -> None:
    bob = await login(server, "bob@localhost/phone")
    await bob.send(chat("app@push.elsewhere.example", "anyone?"))
    (message,) = bob.take()
    assert condition(message) == "remote-server-not-found"


async def test_leaving_removes_the_routes(server: Server) -> None:
    component = await connected(server)
    component.leave()
    assert component.conn.stream_closed and DOMAIN not in server.components.connected
    bob = await login(server, "bob@localhost/phone")
    await bob.send(chat(f"app@{DOMAIN}", "gone?"))
    (message,) = bob.take()
    assert condition(message) == "service-unavailable"
    assert component.take() == []
    # The domain is free for the next component.
    again = await connected(server)
    await bob.send(chat(f"app@{DOMAIN}", "back?"))
    assert len(again.take()) == 1


async def test_connected_components_are_disco_items_of_the_host(server: Server) -> None:
    await connected(server)
    bob = await login(server, "bob@localhost/phone")
    await bob.send(f"<iq type='get' id='i1' to='localhost'><query xmlns='{ns.DISCO_ITEMS}'/></iq>")
    (answer,) = bob.take()
    items = [item.get("jid") for item in answer.iter(qname(ns.DISCO_ITEMS, "item"))]
    assert DOMAIN in items and "other.localhost" not in items


@pytest.mark.parametrize(
    ("components", "key"),
    [
        ({"localhost": {"secret": "x"}}, "components.localhost"),
        ({DOMAIN: {}}, f"components.{DOMAIN}.secret"),
        ({DOMAIN: {"secret": "x", "port": 1}}, f"components.{DOMAIN}.port"),
        ({"a@push.localhost": {"secret": "x"}}, "components.a@push.localhost"),
        ({DOMAIN: "x"}, f"components.{DOMAIN}"),
    ],
)
def test_bad_component_configuration(tmp_path: Path, components: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(tmp_path, components=components)
    assert err.value.key == key


def test_component_domain_listed_once(tmp_path: Path) -> None:
    config = make_config(tmp_path, components={"Push.Localhost": {"secret": "x"}}, listen={"component": ["127.0.0.1:0"]})
    assert list(config.components) == [DOMAIN]
    assert config.listen.component == ["127.0.0.1:0"]
    with pytest.raises(ConfigError):
        make_config(tmp_path, listen={"component": ["nowhere"]})
