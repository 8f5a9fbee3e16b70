"""XEP-0357 payloads: enable, disable and the summary notification, read from XML and round-tripped."""

from __future__ import annotations

from typing import Any

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.dataforms import DataForm, Field
from schnack.xmpp.payloads.pubsub import PUBLISH_OPTIONS, PUBSUB
from schnack.xmpp.payloads.push import (
    NS,
    SUMMARY,
    Disable,
    Enable,
    Notification,
    PushError,
    notification_of,
    publish,
)
from schnack.xmpp.xml import serialize

SECRET = DataForm(
    "submit",
    (Field("FORM_TYPE", "hidden", values=(PUBLISH_OPTIONS,)), Field("secret", values=("eruio234vzxc2kla-91",))),
)


def parse(xml: str) -> Any:
    return parse_frame(xml.encode(), 10**6)


@pytest.mark.parametrize(
    "payload",
    [
        Enable("push-5.client.example", "yxs32uqsflafdk3iuqo"),
        Enable("push-5.client.example", "yxs32uqsflafdk3iuqo", SECRET),
        Disable("push-5.client.example"),
        Disable("push-5.client.example", "yxs32uqsflafdk3iuqo"),
    ],
)
def test_requests_round_trip(payload: Enable | Disable) -> None:
    el = payload.to_xml()
    assert type(payload).from_xml(parse(serialize(el))) == payload
    assert el.tag.startswith(f"{{{NS}}}")


@pytest.mark.parametrize(
    "payload",
    [Notification(), Notification(1), Notification(3, "juliet@capulet.example"), Notification(None, "a@b")],
)
def test_notification_round_trips(payload: Notification) -> None:
    assert Notification.from_xml(parse(serialize(payload.to_xml()))) == payload


def test_enable_as_the_xep_writes_it() -> None:
    """XEP-0357 §5, example 9."""
    enable = Enable.from_xml(parse(
        f"<enable xmlns='{NS}' jid='push-5.client.example' node='yxs32uqsflafdk3iuqo'>"
        "<x xmlns='jabber:x:data' type='submit'>"
        f"<field var='FORM_TYPE'><value>{PUBLISH_OPTIONS}</value></field>"
        "<field var='secret'><value>eruio234vzxc2kla-91</value></field></x></enable>"
    ))
    assert enable.jid == "push-5.client.example"
    assert enable.node == "yxs32uqsflafdk3iuqo"
    assert enable.options is not None and enable.options.value("secret") == "eruio234vzxc2kla-91"


def test_jid_is_normalised() -> None:
    assert Enable.from_xml(parse(f"<enable xmlns='{NS}' jid='Push.Example' node='n'/>")).jid == "push.example"


@pytest.mark.parametrize(
    "xml",
    [
        f"<enable xmlns='{NS}' node='n'/>",
        f"<enable xmlns='{NS}' jid='' node='n'/>",
        f"<enable xmlns='{NS}' jid='a@b@c' node='n'/>",
        f"<enable xmlns='{NS}' jid='push.example'/>",
        # A form of another type, an unsubmitted form, two forms, a broken form.
        f"<enable xmlns='{NS}' jid='p' node='n'><x xmlns='jabber:x:data' type='submit'>"
        "<field var='FORM_TYPE'><value>urn:example</value></field></x></enable>",
        f"<enable xmlns='{NS}' jid='p' node='n'><x xmlns='jabber:x:data' type='form'>"
        f"<field var='FORM_TYPE'><value>{PUBLISH_OPTIONS}</value></field></x></enable>",
        f"<enable xmlns='{NS}' jid='p' node='n'><x xmlns='jabber:x:data' type='submit'/>"
        "<x xmlns='jabber:x:data' type='submit'/></enable>",
        f"<enable xmlns='{NS}' jid='p' node='n'><x xmlns='jabber:x:data' type='nonsense'/></enable>",
        f"<disable xmlns='{NS}' jid='p' node='n'/>",
    ],
)
def test_bad_enable_is_refused(xml: str) -> None:
    with pytest.raises(PushError):
        Enable.from_xml(parse(xml))


def test_bad_disable_is_refused() -> None:
    with pytest.raises(PushError):
        Disable.from_xml(parse(f"<disable xmlns='{NS}' node='n'/>"))


def test_publish_carries_summary_and_secret_but_no_body() -> None:
    """§7: the publish to the node, the summary form, and the publish-options the client gave."""
    el = publish("yxs32uqsflafdk3iuqo", Notification(2, "juliet@capulet.example"), SECRET).to_xml()
    text = serialize(el)
    assert el.tag == f"{{{PUBSUB}}}pubsub"
    assert "last-message-body" not in text and "<body" not in text
    request, notification = notification_of(parse(text))
    assert request.node == "yxs32uqsflafdk3iuqo"
    assert request.options == SECRET
    assert notification == Notification(2, "juliet@capulet.example")


def test_notification_reads_the_xep_example_without_the_body() -> None:
    """§7 example 11 carries a body too; the model keeps only what schnack sends."""
    note = Notification.from_xml(parse(
        f"<notification xmlns='{NS}'><x xmlns='jabber:x:data' type='submit'>"
        f"<field var='FORM_TYPE'><value>{SUMMARY}</value></field>"
        "<field var='message-count'><value>1</value></field>"
        "<field var='last-message-sender'><value>juliet@capulet.example/balcony</value></field>"
        "<field var='last-message-body'><value>Wherefore art thou, Romeo?</value></field></x>"
        "<additional xmlns='http://example.com/custom'>Additional custom elements</additional>"
        "</notification>"
    ))
    assert note == Notification(1, "juliet@capulet.example/balcony")


@pytest.mark.parametrize(
    "xml",
    [
        f"<notification xmlns='{NS}'><x xmlns='jabber:x:data' type='submit'>"
        f"<field var='FORM_TYPE'><value>{SUMMARY}</value></field>"
        "<field var='message-count'><value>many</value></field></x></notification>",
        f"<notification xmlns='{NS}'><x xmlns='jabber:x:data'/></notification>",
        f"<enable xmlns='{NS}' jid='p' node='n'/>",
    ],
)
def test_bad_notification_is_refused(xml: str) -> None:
    with pytest.raises(PushError):
        Notification.from_xml(parse(xml))


@pytest.mark.parametrize(
    "xml",
    [
        f"<pubsub xmlns='{PUBSUB}'><retract node='n'><item id='1'/></retract></pubsub>",
        f"<pubsub xmlns='{PUBSUB}'><publish node='n'/></pubsub>",
        f"<pubsub xmlns='{PUBSUB}'><publish node='n'><item/></publish></pubsub>",
    ],
)
def test_not_a_notification(xml: str) -> None:
    with pytest.raises(PushError):
        notification_of(parse(xml))
