"""XEP-0357 push in memory: registrations, when a notification goes out, what it carries, coalescing, errors.

The app server is a XEP-0114 component held in memory (the real component stream), as a real
app server such as Conversations' p2 connects to schnack.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.component import ACCEPT
from schnack.server.modules.push import STORE, Push, Registration
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads.pubsub import PUBLISH_OPTIONS, PUBSUB
from schnack.xmpp.payloads.push import NS, Notification, notification_of
from schnack.xmpp.xml import qname, serialize

from ...harness import DOMAIN, Client, running, xml
from ..components import MemoryComponent, accept, open_component
from .contacts import presence
from .messaging import OMEMO, chat, condition, login

APP = "push.localhost"
APP_SECRET = "component secret"
NODE = "yxs32uqsflafdk3iuqo"
TOKEN = "eruio234vzxc2kla-91"
SM = "urn:xmpp:sm:3"
TEXT = "the words that must never reach an app server"


def options(**push: Any) -> dict[str, Any]:
    return {
        "modules": {"e2e": {"policy": "optional"}, "push": push},
        "components": {APP: {"secret": APP_SECRET}},
    }


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(tmp_path, **options()) as srv:
        yield srv


def enable(jid: str = APP, node: str = NODE, secret: str | None = TOKEN, id: str = "e1") -> str:
    form = ""
    if secret is not None:
        form = (
            "<x xmlns='jabber:x:data' type='submit'>"
            f"<field var='FORM_TYPE'><value>{PUBLISH_OPTIONS}</value></field>"
            f"<field var='secret'><value>{secret}</value></field></x>"
        )
    return f"<iq type='set' id='{id}'><enable xmlns='{NS}' jid='{jid}' node='{node}'>{form}</enable></iq>"


def disable(jid: str = APP, node: str | None = NODE, id: str = "d1") -> str:
    node_attr = f" node='{node}'" if node is not None else ""
    return f"<iq type='set' id='{id}'><disable xmlns='{NS}' jid='{jid}'{node_attr}/></iq>"


async def registrations(server: Server, user: str = "bob") -> dict[str, Registration]:
    blobs = await server.storage.maps.items(DOMAIN, user, STORE)
    return {key: Registration.load(blob) for key, blob in blobs.items()}


async def enabled(server: Server, jid: str = "bob@localhost/phone", **kw: Any) -> Client:
    client = await login(server, jid)
    await client.send(enable(**kw))
    (answer,) = client.take()
    assert answer.get("type") == "result", xml(answer)
    return client


async def app_server(server: Server) -> MemoryComponent:
    component = await open_component(server, APP, APP_SECRET)
    assert [el.tag for el in component.take()] == [accept("handshake")]
    return component


async def notification(app: MemoryComponent) -> tuple[Element, Notification]:
    """The next publish the app server gets: the IQ and its notification."""
    (iq,) = await app.expect()
    assert iq.tag == accept("iq") and iq.get("type") == "set", xml(iq)
    pubsub = iq.find(f"{{{PUBSUB}}}pubsub")
    assert pubsub is not None
    request, note = notification_of(pubsub)
    assert request.node == NODE
    return iq, note


async def answer(app: MemoryComponent, iq: Element, error: str | None = None, kind: str = "cancel") -> None:
    """The app server's reply to a publish: a result, or an error with ``error``."""
    attrs = f"xmlns='{ACCEPT}' id='{iq.get('id')}' from='{iq.get('to')}' to='{iq.get('from')}'"
    if error is None:
        await app.send(f"<iq {attrs} type='result'/>")
    else:
        await app.send(
            f"<iq {attrs} type='error'><error type='{kind}'><{error} xmlns='{ns.STANZA_ERRORS}'/></error></iq>"
        )


async def gone_offline(server: Server) -> None:
    """bob enables push and leaves for good."""
    bob = await enabled(server)
    await bob.close()


# Registrations ---------------------------------------------------------------------------------


async def test_account_announces_push(server: Server) -> None:
    bob = await login(server, "bob@localhost/phone")
    await bob.send(f"<iq type='get' id='i1' to='bob@localhost'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    (info,) = bob.take()
    features = [f.get("var") for f in info.iter(qname(ns.DISCO_INFO, "feature"))]
    assert NS in features


async def test_enable_stores_the_registration(server: Server) -> None:
    await enabled(server)
    (stored,) = (await registrations(server)).values()
    assert (stored.enable.jid, stored.enable.node, stored.resource) == (APP, NODE, "phone")
    assert stored.enable.options is not None and stored.enable.options.value("secret") == TOKEN


async def test_enable_again_replaces_and_survives_restart(tmp_path: Path) -> None:
    async with running(tmp_path, **options()) as server:
        bob = await enabled(server)
        await bob.send(enable(secret="new secret", id="e2"))
        bob.take()
    async with running(tmp_path, **options()) as server:
        (stored,) = (await registrations(server)).values()
        assert stored.enable.options is not None and stored.enable.options.value("secret") == "new secret"


@pytest.mark.parametrize(
    "payload",
    [
        f"<enable xmlns='{NS}' node='{NODE}'/>",
        f"<enable xmlns='{NS}' jid='{APP}'/>",
        f"<enable xmlns='{NS}' jid='not@a@jid' node='{NODE}'/>",
        f"<enable xmlns='{NS}' jid='{APP}' node='{NODE}'><x xmlns='jabber:x:data' type='submit'>"
        "<field var='FORM_TYPE'><value>urn:example:other</value></field></x></enable>",
        f"<enable xmlns='{NS}' jid='{APP}' node='{NODE}'><x xmlns='jabber:x:data' type='bogus'/></enable>",
        f"<disable xmlns='{NS}'/>",
    ],
)
async def test_bad_requests(server: Server, payload: str) -> None:
    bob = await login(server, "bob@localhost/phone")
    await bob.send(f"<iq type='set' id='b1'>{payload}</iq>")
    (error,) = bob.take()
    assert condition(error) == "bad-request"
    assert await registrations(server) == {}


async def test_only_the_account_itself_enables(server: Server) -> None:
    await login(server, "bob@localhost/phone")
    alice = await login(server, "alice@localhost/desk")
    await alice.send(enable().replace("<iq ", "<iq to='bob@localhost' "))
    (error,) = alice.take()
    assert condition(error) == "service-unavailable"
    assert await registrations(server) == {}


async def test_get_is_not_supported(server: Server) -> None:
    bob = await login(server, "bob@localhost/phone")
    await bob.send(enable().replace("type='set'", "type='get'"))
    (error,) = bob.take()
    assert condition(error) == "feature-not-implemented"


async def test_disable_one_node_or_all(server: Server) -> None:
    bob = await enabled(server)
    await bob.send(enable(node="second", id="e2"))
    await bob.send(enable(jid="other.example", node="third", id="e3"))
    await bob.send(disable(node="second"))
    assert {r.enable.node for r in (await registrations(server)).values()} == {NODE, "third"}
    await bob.send(disable(node=None, id="d2"))
    await bob.send(disable(jid="nothing.example", node=None, id="d3"))
    assert {r.enable.node for r in (await registrations(server)).values()} == {"third"}
    assert [el.get("type") for el in bob.take()] == ["result"] * 5


async def test_too_many_registrations_forget_the_oldest(tmp_path: Path) -> None:
    async with running(tmp_path, **options(max_registrations=2)) as server:
        bob = await enabled(server, node="first")
        await bob.send(enable(node="second", id="e2"))
        await bob.send(enable(node="third", id="e3"))
        assert {r.enable.node for r in (await registrations(server)).values()} == {"second", "third"}


# Notifications ---------------------------------------------------------------------------------


async def test_offline_message_notifies_without_content(server: Server) -> None:
    app = await app_server(server)
    await gone_offline(server)
    alice = await login(server, "alice@localhost/desk")
    await alice.send(chat("bob@localhost", TEXT))
    assert alice.take() == []
    iq, note = await notification(app)
    assert iq.get("from") == "bob@localhost" and iq.get("to") == APP
    assert note == Notification(1, "alice@localhost")
    text = serialize(iq)
    assert TEXT not in text and "body" not in text
    # §7: the client's publish-options (the app server's secret) go along.
    request, _ = notification_of(iq[0])
    assert request.options is not None and request.options.value("secret") == TOKEN
    await answer(app, iq)
    assert len(await registrations(server)) == 1


async def test_encrypted_message_and_call_proposal_notify(tmp_path: Path) -> None:
    async with running(tmp_path, **options(coalesce_interval=0)) as server:
        app = await app_server(server)
        await gone_offline(server)
        alice = await login(server, "alice@localhost/desk")
        await alice.send(f"<message to='bob@localhost' type='chat' id='o1'>{OMEMO}</message>")
        _, first = await notification(app)
        await alice.send(
            "<message to='bob@localhost' id='c1'><propose xmlns='urn:xmpp:jingle-message:0' id='call1'>"
            "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose>"
            "<store xmlns='urn:xmpp:hints'/></message>"
        )
        iq, second = await notification(app)
        assert (first.message_count, second.message_count) == (1, 2)
        assert "payload" not in serialize(iq) and "propose" not in serialize(iq)


async def test_chat_states_and_receipts_do_not_notify(tmp_path: Path) -> None:
    async with running(tmp_path, **options(coalesce_interval=0)) as server:
        app = await app_server(server)
        await gone_offline(server)
        alice = await login(server, "alice@localhost/desk")
        await alice.send("<message to='bob@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
        await alice.send("<message to='bob@localhost' id='r1'><received xmlns='urn:xmpp:receipts' id='m0'/></message>")
        await alice.send(f"<message to='bob@localhost' type='chat' id='n1'><body>{TEXT}</body><no-store xmlns='urn:xmpp:hints'/></message>")
        await alice.send(chat("bob@localhost", TEXT))
        # The first notification is for the one message that matters.
        _, note = await notification(app)
        assert note.message_count == 1


async def notified_once(server: Server) -> tuple[MemoryComponent, Client]:
    """bob's device, gone, is notified of alice's first message, and the app server takes it."""
    app = await app_server(server)
    await gone_offline(server)
    alice = await login(server, "alice@localhost/desk")
    await alice.send(chat("bob@localhost", "one", id="m1"))
    iq, note = await notification(app)
    assert note.message_count == 1
    await answer(app, iq)
    return app, alice


async def test_a_message_the_full_mailbox_refuses_does_not_notify(tmp_path: Path) -> None:
    """§7: a device is woken for what waits for it; a message offline storage refused (the
    recipient's mailbox is full, XEP-0160 §2) does not wait, nor count in a later notification."""
    settings = options(coalesce_interval=0)
    settings["modules"]["offline"] = {"max_messages": 1}
    async with running(tmp_path, **settings) as server:
        app, alice = await notified_once(server)
        await alice.send(chat("bob@localhost", "refused", id="m2"))
        (error,) = alice.take()
        assert error.get("id") == "m2" and condition(error) == "service-unavailable"
        push = server.modules[Push.name]
        assert isinstance(push, Push)
        await push.notifications_sent()
        assert app.take() == []


async def test_notifications_coalesce_until_the_device_comes_back(server: Server) -> None:
    app, alice = await notified_once(server)
    for i in range(2, 5):
        await alice.send(chat("bob@localhost", "more", id=f"m{i}"))
    # bob comes back (and gets what waited), then leaves again.
    bob = await login(server, "bob@localhost/phone")
    await bob.send(presence())
    await bob.close()
    await alice.send(chat("bob@localhost", "after", id="m5"))
    _, again = await notification(app)
    # The count starts anew: the messages in between notified nobody.
    assert again.message_count == 1
    assert app.take() == []


async def test_app_server_error_disables_the_registration(server: Server) -> None:
    app = await app_server(server)
    await gone_offline(server)
    alice = await login(server, "alice@localhost/desk")
    await alice.send(chat("bob@localhost", "one"))
    iq, _ = await notification(app)
    await answer(app, iq, "item-not-found")
    assert await registrations(server) == {}


async def test_an_error_answering_a_registration_replaced_since_keeps_the_new_one(server: Server) -> None:
    """§8: the error disables the registration it answers; the device that enabled push again
    meanwhile (a new secret, the same node) keeps being woken."""
    app = await app_server(server)
    await gone_offline(server)
    alice = await login(server, "alice@localhost/desk")
    await alice.send(chat("bob@localhost", "one"))
    iq, _ = await notification(app)
    bob = await enabled(server, secret="new secret", id="e2")
    await bob.close()
    await answer(app, iq, "not-authorized")
    (stored,) = (await registrations(server)).values()
    assert stored.enable.options is not None and stored.enable.options.value("secret") == "new secret"
    await alice.send(chat("bob@localhost", "two", id="m2"))
    iq, note = await notification(app)
    request, _ = notification_of(iq[0])
    assert request.options is not None and request.options.value("secret") == "new secret"
    assert note == Notification(1, "alice@localhost")


@pytest.mark.parametrize(("error", "kind"), [("remote-server-timeout", "wait"), ("resource-constraint", "wait")])
async def test_transient_errors_keep_the_registration_and_do_not_coalesce(server: Server, error: str, kind: str) -> None:
    app = await app_server(server)
    await gone_offline(server)
    alice = await login(server, "alice@localhost/desk")
    await alice.send(chat("bob@localhost", "one"))
    iq, _ = await notification(app)
    await answer(app, iq, error, kind)
    assert len(await registrations(server)) == 1
    # The device was never woken: coalescing must not swallow the next message's notification.
    await alice.send(chat("bob@localhost", "two", id="m2"))
    _, note = await notification(app)
    assert note == Notification(2, "alice@localhost")


async def test_a_transient_error_is_retried_a_few_times(tmp_path: Path) -> None:
    async with running(tmp_path, **options(retry_interval=0.1, max_retries=2)) as server:
        app = await app_server(server)
        await gone_offline(server)
        alice = await login(server, "alice@localhost/desk")
        await alice.send(chat("bob@localhost", "one"))
        for _ in range(3):
            iq, note = await notification(app)
            assert note == Notification(1, "alice@localhost")
            await answer(app, iq, "remote-server-timeout", "wait")
        # Given up after max_retries: no loop of notifications.
        with pytest.raises(TimeoutError):
            await app.expect(timeout=0.5)
        assert len(await registrations(server)) == 1


async def test_error_from_someone_else_is_ignored(server: Server) -> None:
    app = await app_server(server)
    await gone_offline(server)
    alice = await login(server, "alice@localhost/desk")
    await alice.send(chat("bob@localhost", "one"))
    iq, _ = await notification(app)
    # alice guesses the id and answers in the app server's place.
    await alice.send(
        f"<iq type='error' id='{iq.get('id')}' to='bob@localhost'>"
        f"<error type='cancel'><item-not-found xmlns='{ns.STANZA_ERRORS}'/></error></iq>"
    )
    assert len(await registrations(server)) == 1


async def test_unconnected_app_server_keeps_the_registration(tmp_path: Path) -> None:
    async with running(tmp_path, **options(coalesce_interval=0)) as server:
        await gone_offline(server)
        alice = await login(server, "alice@localhost/desk")
        await alice.send(chat("bob@localhost", "one"))
        push = server.modules["push"]
        assert isinstance(push, Push)
        await push.notifications_sent()
        # The app server connects late; the next message reaches it and the registration still stands.
        app = await app_server(server)
        await alice.send(chat("bob@localhost", "two", id="m2"))
        _, note = await notification(app)
        assert note.message_count == 2
        assert len(await registrations(server)) == 1


async def test_hibernating_session_notifies_its_device(server: Server) -> None:
    app = await app_server(server)
    bob = await enabled(server)
    await bob.send(presence())
    await bob.send(f"<enable xmlns='{SM}' resume='true'/>")
    bob.take()
    # The phone vanishes: its session hibernates, still available, and queues what comes.
    await bob.close()
    assert server.sessions.get(JID.parse("bob@localhost/phone")) is not None
    alice = await login(server, "alice@localhost/desk")
    await alice.send(chat("bob@localhost", TEXT))
    iq, note = await notification(app)
    assert note == Notification(1, "alice@localhost")
    assert TEXT not in serialize(iq)
    assert await server.storage.archive.count(DOMAIN, "bob", "offline") == 0


async def test_a_message_left_unacknowledged_when_hibernation_begins_notifies(server: Server) -> None:
    """The phone's connection died silently (an iOS app suspended): the message written to it
    before the server noticed was never acknowledged, so the device must be woken for it."""
    app = await app_server(server)
    bob = await enabled(server)
    await bob.send(presence())
    await bob.send(f"<enable xmlns='{SM}' resume='true'/>")
    alice = await login(server, "alice@localhost/desk")
    await alice.send(chat("bob@localhost/phone", TEXT))
    assert any(el.tag == qname(ns.CLIENT, "message") for el in bob.take())
    await bob.close()
    iq, note = await notification(app)
    assert note == Notification(1, "alice@localhost")
    assert TEXT not in serialize(iq)


async def hibernate(*clients: Client) -> None:
    """Each client comes online, enables resumable stream management and vanishes."""
    for client in clients:
        await client.send(presence())
        await client.send(f"<enable xmlns='{SM}' resume='true'/>")
        await client.close()


async def test_hibernating_session_of_another_device_does_not_notify(tmp_path: Path) -> None:
    async with running(tmp_path, **options(coalesce_interval=0)) as server:
        app = await app_server(server)
        phone = await enabled(server)
        # The desktop has no push registration; it vanishes and hibernates.
        desk = await login(server, "bob@localhost/desk")
        await hibernate(desk, phone)
        alice = await login(server, "alice@localhost/desk")
        await alice.send(chat("bob@localhost/desk", "to the desk", id="m1"))
        await alice.send(chat("bob@localhost/phone", "to the phone", id="m2"))
        # Had the desk's message notified, its notification would have come first.
        _, note = await notification(app)
        assert note.message_count == 1
        assert app.take() == []


async def test_a_device_back_under_a_new_resource_is_notified_at_once_when_it_hibernates(server: Server) -> None:
    """The phone was notified, came back under another resource without enabling push again, and
    hibernated: it may be the device of the registration no session holds, so its count starts
    anew and the next message wakes it, coalescing interval or not."""
    app, alice = await notified_once(server)
    bob = await login(server, "bob@localhost/phone-2")
    await bob.send(presence())
    await bob.send(f"<enable xmlns='{SM}' resume='true'/>")
    bob.take()
    await bob.close()
    await alice.send(chat("bob@localhost", "after", id="m2"))
    _, again = await notification(app)
    assert again.message_count == 1
    assert app.take() == []


async def test_a_device_back_and_online_is_not_woken_for_another_devices_hibernation(tmp_path: Path) -> None:
    """The phone came back under another resource without enabling push again and is online: a
    message queued for the desk's hibernating session does not wake the registration no session
    holds, which is the phone's, online already."""
    async with running(tmp_path, **options(coalesce_interval=0)) as server:
        app = await app_server(server)
        await gone_offline(server)
        tablet = await enabled(server, "bob@localhost/tablet", node="tablet-node")
        desk = await login(server, "bob@localhost/desk")
        await hibernate(desk, tablet)
        phone = await login(server, "bob@localhost/phone-2")
        await phone.send(presence())
        alice = await login(server, "alice@localhost/desk")
        await alice.send(chat("bob@localhost/desk", "to the desk", id="m1"))
        await alice.send(chat("bob@localhost/tablet", "to the tablet", id="m2"))
        # Had the desk's message woken the phone's registration, that would have come first.
        (iq,) = await app.expect()
        pubsub = iq.find(f"{{{PUBSUB}}}pubsub")
        assert pubsub is not None
        request, note = notification_of(pubsub)
        assert (request.node, note.message_count) == ("tablet-node", 1)
        assert app.take() == []


async def test_an_unanswered_notification_holds_up_nothing(server: Server) -> None:
    """The app server never answers: alice's messages are still stored and acknowledged at once."""
    app = await app_server(server)
    await gone_offline(server)
    alice = await login(server, "alice@localhost/desk")
    await alice.send(f"<enable xmlns='{SM}'/>")
    alice.take()
    await alice.send(chat("bob@localhost", "one", id="m1"))
    await notification(app)
    await alice.send(chat("bob@localhost", "two", id="m2"))
    await alice.send(f"<r xmlns='{SM}'/>")
    (ack,) = alice.take()
    assert ack.tag == qname(SM, "a") and ack.get("h") == "2"
    assert await server.storage.archive.count(DOMAIN, "bob", "offline") == 2


async def test_deleting_the_account_deletes_its_registrations(server: Server) -> None:
    await gone_offline(server)
    assert await server.delete_account(DOMAIN, "bob")
    assert await registrations(server) == {}


async def test_a_disabled_node_is_not_notified(tmp_path: Path) -> None:
    async with running(tmp_path, **options(coalesce_interval=0)) as server:
        app = await app_server(server)
        alice = await login(server, "alice@localhost/desk")
        bob = await enabled(server, node="old")
        await bob.close()
        # The registrations were read (and kept in memory) for this message.
        await alice.send(chat("bob@localhost", "one", id="m1"))
        (first,) = await app.expect()
        await answer(app, first)
        bob = await login(server, "bob@localhost/phone")
        await bob.send(enable(id="e2"))
        await bob.send(disable(node="old"))
        await bob.close()
        await alice.send(chat("bob@localhost", "two", id="m2"))
        _, note = await notification(app)
        assert note.message_count == 1
        assert app.take() == []


async def test_app_server_disables_remotely(server: Server) -> None:
    """§8: a subscription notification of state none from the app server ends the registration."""
    app = await app_server(server)
    await gone_offline(server)
    event = (
        "<event xmlns='http://jabber.org/protocol/pubsub#event'>"
        "<subscription node='{node}' jid='bob@localhost' subscription='none'/></event>"
    )
    # Another node, and the right node from someone else, change nothing.
    await app.send(f"<message xmlns='{ACCEPT}' from='{APP}' to='bob@localhost'>{event.format(node='other')}</message>")
    alice = await login(server, "alice@localhost/desk")
    await alice.send(f"<message to='bob@localhost'>{event.format(node=NODE)}</message>")
    assert len(await registrations(server)) == 1
    await app.send(f"<message xmlns='{ACCEPT}' from='{APP}' to='bob@localhost'>{event.format(node=NODE)}</message>")
    assert await registrations(server) == {}
