"""XEP-0060 payloads: requests, owner requests, events, node configuration and errors."""

from __future__ import annotations

import pytest

from schnack.xmpp import ns
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.dataforms import DataForm, Field
from schnack.xmpp.payloads.pubsub import (
    ERRORS,
    EVENT,
    NODE_CONFIG,
    OWNER,
    PUBLISH_OPTIONS,
    PUBSUB,
    Configure,
    Create,
    Default,
    Delete,
    EventDelete,
    EventItems,
    EventPurge,
    Item,
    Items,
    NodeConfig,
    OwnerSubscriptions,
    Publish,
    PubSubError,
    Purge,
    Retract,
    Subscribe,
    Subscription,
    Subscriptions,
    Unsubscribe,
    parse_event,
    parse_request,
    pubsub_error,
)
from schnack.xmpp.xml import serialize

DEVICES = "eu.siacs.conversations.axolotl.devicelist"


def parse(xml: str) -> object:
    return parse_request(parse_frame(xml.encode(), 10**6))


def round_trip(xml: str) -> None:
    """Reading and writing a request gives back the same XML."""
    el = parse_frame(xml.encode(), 10**6)
    assert serialize(parse_request(el).to_xml()) == serialize(el)


def options(**values: str) -> DataForm:
    fields = [Field("FORM_TYPE", "hidden", values=(PUBLISH_OPTIONS,))]
    fields += [Field(f"pubsub#{var}", values=(value,)) for var, value in values.items()]
    return DataForm("submit", tuple(fields))


PUBLISH = (
    f'<pubsub xmlns="{PUBSUB}"><publish node="{DEVICES}"><item id="current">'
    f'<list xmlns="eu.siacs.conversations.axolotl"><device id="1234"/></list></item></publish>'
    f'<publish-options><x xmlns="jabber:x:data" type="submit">'
    f'<field var="FORM_TYPE" type="hidden"><value>{PUBLISH_OPTIONS}</value></field>'
    f'<field var="pubsub#access_model"><value>open</value></field></x></publish-options></pubsub>'
)


def test_publish_with_options() -> None:
    request = parse(PUBLISH)
    assert isinstance(request, Publish)
    assert request.node == DEVICES
    (item,) = request.items
    assert item.id == "current"
    assert item.payload is not None and item.payload.tag == "{eu.siacs.conversations.axolotl}list"
    assert request.options is not None
    assert request.options.form_type == PUBLISH_OPTIONS
    assert request.options.value("pubsub#access_model") == "open"
    round_trip(PUBLISH)


def test_publish_result_names_the_item() -> None:
    result = Publish("urn:xmpp:avatar:metadata", (Item("abc"),)).to_xml()
    assert serialize(result) == (
        f'<pubsub xmlns="{PUBSUB}"><publish node="urn:xmpp:avatar:metadata"><item id="abc"/></publish></pubsub>'
    )
    assert parse_request(result) == Publish("urn:xmpp:avatar:metadata", (Item("abc"),))


def test_items_requests() -> None:
    round_trip(f'<pubsub xmlns="{PUBSUB}"><items node="n" max_items="2"/></pubsub>')
    round_trip(f'<pubsub xmlns="{PUBSUB}"><items node="n"><item id="a"/><item id="b"/></items></pubsub>')
    request = parse(f'<pubsub xmlns="{PUBSUB}"><items node="n"><item id="a"/><item id="b"/></items></pubsub>')
    assert isinstance(request, Items)
    assert request.ids == ("a", "b")
    assert request.max_items is None
    with pytest.raises(PubSubError) as bad:
        parse(f'<pubsub xmlns="{PUBSUB}"><items node="n" max_items="0"/></pubsub>')
    assert bad.value.condition == "bad-request"


def test_retract_create_and_owner_requests() -> None:
    round_trip(f'<pubsub xmlns="{PUBSUB}"><retract node="n" notify="true"><item id="a"/></retract></pubsub>')
    assert parse(f"<pubsub xmlns='{PUBSUB}'><retract node='n' notify='1'><item id='a'/></retract></pubsub>") == (
        Retract("n", ("a",), notify=True)
    )
    assert parse(f"<pubsub xmlns='{PUBSUB}'><retract node='n'><item id='a'/></retract></pubsub>") == (
        Retract("n", ("a",), notify=False)
    )
    round_trip(f'<pubsub xmlns="{PUBSUB}"><create node="n"/></pubsub>')
    assert parse(f'<pubsub xmlns="{PUBSUB}"><create/></pubsub>') == Create(None)
    round_trip(f'<pubsub xmlns="{OWNER}"><configure node="n"/></pubsub>')
    round_trip(f'<pubsub xmlns="{OWNER}"><delete node="n"/></pubsub>')
    round_trip(f'<pubsub xmlns="{OWNER}"><purge node="n"/></pubsub>')
    round_trip(f'<pubsub xmlns="{OWNER}"><default/></pubsub>')
    assert parse(f'<pubsub xmlns="{OWNER}"><delete node="n"/></pubsub>') == Delete("n")
    assert parse(f'<pubsub xmlns="{OWNER}"><purge node="n"/></pubsub>') == Purge("n")
    assert parse(f'<pubsub xmlns="{OWNER}"><default/></pubsub>') == Default()


def test_configure_and_create_forms_round_trip() -> None:
    form = NodeConfig(access_model="whitelist", max_items=10).to_form("submit")
    configure = Configure("n", form)
    assert parse_request(configure.to_xml()) == configure
    create = Create("n", form)
    assert parse_request(create.to_xml()) == create


@pytest.mark.parametrize(
    ("xml", "condition", "app"),
    [
        (f"<pubsub xmlns='{PUBSUB}'><publish/></pubsub>", "bad-request", "nodeid-required"),
        (f"<pubsub xmlns='{PUBSUB}'><items node=''/></pubsub>", "bad-request", "nodeid-required"),
        (f"<pubsub xmlns='{PUBSUB}'><retract node='n'/></pubsub>", "bad-request", "item-required"),
        (f"<pubsub xmlns='{PUBSUB}'><publish node='n'><item><a xmlns='x'/><b xmlns='x'/></item></publish></pubsub>",
         "bad-request", "invalid-payload"),
        (f"<pubsub xmlns='{PUBSUB}'><options node='n' jid='a@b'/></pubsub>", "feature-not-implemented", "unsupported"),
        (f"<pubsub xmlns='{PUBSUB}'><subscribe node='n'/></pubsub>", "bad-request", "jid-required"),
        (f"<pubsub xmlns='{PUBSUB}'><unsubscribe jid='a@b'/></pubsub>", "bad-request", "nodeid-required"),
        (f"<pubsub xmlns='{OWNER}'><subscriptions/></pubsub>", "bad-request", "nodeid-required"),
        (f"<pubsub xmlns='{OWNER}'><subscriptions node='n'><subscription jid='a@b' subscription='maybe'/>"
         "</subscriptions></pubsub>", "bad-request", None),
        (f"<pubsub xmlns='{PUBSUB}'/>", "bad-request", None),
    ],
)
def test_malformed_and_unsupported_requests(xml: str, condition: str, app: str | None) -> None:
    with pytest.raises(PubSubError) as err:
        parse(xml)
    assert err.value.condition == condition
    assert err.value.app == app


def test_unsupported_names_its_feature() -> None:
    with pytest.raises(PubSubError) as err:
        parse(f"<pubsub xmlns='{OWNER}'><affiliations node='n'/></pubsub>")
    error = err.value.to_stanza_error().to_xml()
    (unsupported,) = error.findall(f"{{{ERRORS}}}unsupported")
    assert unsupported.get("feature") == "modify-affiliations"


def test_item_not_found_carries_the_legacy_code() -> None:
    error = pubsub_error("item-not-found").to_xml()
    assert error.get("code") == "404"
    assert error.get("type") == "cancel"
    assert error.find(f"{{{ns.STANZA_ERRORS}}}item-not-found") is not None
    conflict = pubsub_error("conflict", "precondition-not-met").to_xml()
    assert conflict.get("code") is None
    assert conflict.find(f"{{{ERRORS}}}precondition-not-met") is not None


def test_events() -> None:
    payload = parse_frame(b"<nick xmlns='http://jabber.org/protocol/nick'>Alice</nick>", 1000)
    published = EventItems("http://jabber.org/protocol/nick", (Item("current", payload),))
    xml = serialize(published.to_xml())
    assert xml == (
        f'<event xmlns="{EVENT}"><items node="http://jabber.org/protocol/nick"><item id="current">'
        '<nick xmlns="http://jabber.org/protocol/nick">Alice</nick></item></items></event>'
    )
    again = parse_event(parse_frame(xml.encode(), 10**6))
    assert isinstance(again, EventItems) and serialize(again.to_xml()) == xml
    retracted = EventItems("n", retracted=("a", "b"))
    assert parse_event(retracted.to_xml()) == retracted
    assert parse_event(EventDelete("n").to_xml()) == EventDelete("n")
    assert parse_event(EventPurge("n").to_xml()) == EventPurge("n")


def test_node_config_from_publish_options() -> None:
    config = NodeConfig().with_form(
        options(access_model="open", max_items="max", persist_items="true", send_last_published_item="never"),
        max_limit=500, form_type=PUBLISH_OPTIONS,
    )
    assert config == NodeConfig(access_model="open", max_items=500, persist_items=True, send_last_published_item="never")
    # "1"/"true" and "0"/"false" mean the same (XEP-0004 §3.3 boolean).
    assert NodeConfig().with_form(options(persist_items="0"), 10, PUBLISH_OPTIONS).persist_items is False
    assert NodeConfig().with_form(options(max_items="7"), 10, PUBLISH_OPTIONS).max_items == 7
    # Options that cannot change are accepted with the value they always have.
    fixed = options(deliver_payloads="1", deliver_notifications="true", notification_type="headline",
                    publish_model="publishers", purge_offline="false")
    assert NodeConfig().with_form(fixed, 10, PUBLISH_OPTIONS) == NodeConfig()


@pytest.mark.parametrize(
    "values",
    [
        {"access_model": "authorize"},
        {"max_items": "11"},
        {"max_items": "0"},
        {"max_items": "many"},
        {"persist_items": "yes"},
        {"send_last_published_item": "always"},
        {"deliver_payloads": "false"},
        {"notification_type": "normal"},
        {"expire": "3600"},
    ],
)
def test_node_config_refuses_what_it_cannot_do(values: dict[str, str]) -> None:
    with pytest.raises(PubSubError) as err:
        NodeConfig().with_form(options(**values), 10, PUBLISH_OPTIONS)
    assert err.value.condition == "not-acceptable"


def test_node_config_form_round_trip() -> None:
    config = NodeConfig(access_model="roster", max_items=3, persist_items=False, send_last_published_item="on_sub",
                        notify_retract=False, notify_delete=False, roster_groups_allowed=("Family", "Work"),
                        title="Status")
    form = config.to_form()
    assert form.form_type == NODE_CONFIG
    submitted = DataForm("submit", form.fields)
    assert NodeConfig().with_form(submitted, 10) == config
    with pytest.raises(PubSubError):
        NodeConfig().with_form(submitted, 10, PUBLISH_OPTIONS)


@pytest.mark.parametrize(
    "xml",
    [
        f'<pubsub xmlns="{PUBSUB}"><subscribe node="urn:xmpp:vcard4" jid="juliet@capulet.lit" /></pubsub>',
        f'<pubsub xmlns="{PUBSUB}"><unsubscribe node="n" jid="juliet@capulet.lit" subid="s1" /></pubsub>',
        f'<pubsub xmlns="{PUBSUB}"><unsubscribe node="n" jid="juliet@capulet.lit" /></pubsub>',
        f'<pubsub xmlns="{PUBSUB}"><subscriptions /></pubsub>',
        f'<pubsub xmlns="{PUBSUB}"><subscriptions node="n"><subscription node="n" jid="a@b" '
        f'subscription="subscribed" subid="s1" /></subscriptions></pubsub>',
        f'<pubsub xmlns="{OWNER}"><subscriptions node="n" /></pubsub>',
        f'<pubsub xmlns="{OWNER}"><subscriptions node="n"><subscription jid="a@b" subscription="none" />'
        f'<subscription jid="c@d/r" subscription="subscribed" subid="s2" /></subscriptions></pubsub>',
    ],
)
def test_subscription_requests_round_trip(xml: str) -> None:
    round_trip(xml)


def test_subscription_requests_read() -> None:
    """§6.1.1, §6.2.1, §5.6, §8.8.2: the fields each request carries."""
    assert parse(f"<pubsub xmlns='{PUBSUB}'><subscribe node='n' jid='a@b/r'/></pubsub>") == Subscribe("n", "a@b/r")
    assert parse(f"<pubsub xmlns='{PUBSUB}'><unsubscribe node='n' jid='a@b' subid='x'/></pubsub>") == Unsubscribe(
        "n", "a@b", "x"
    )
    assert parse(f"<pubsub xmlns='{PUBSUB}'><subscriptions/></pubsub>") == Subscriptions()
    owner = parse(f"<pubsub xmlns='{OWNER}'><subscriptions node='n'><subscription jid='a@b' subscription='none'/>"
                  "</subscriptions></pubsub>")  # fmt: skip
    assert owner == OwnerSubscriptions("n", (Subscription(None, "a@b", "none"),))


def test_subscription_result() -> None:
    """§6.1.2: the answer to a subscription names the node, the JID, the state and the subid."""
    result = Subscription("n", "a@b", subid="s1").result()
    (sub,) = result
    assert result.tag == f"{{{PUBSUB}}}pubsub" and sub.tag == f"{{{PUBSUB}}}subscription"
    assert dict(sub.attrib) == {"node": "n", "jid": "a@b", "subscription": "subscribed", "subid": "s1"}
    assert Subscription.from_xml(sub) == Subscription("n", "a@b", "subscribed", "s1")
