"""XEP-0357: Push Notifications (v0.4): enabling and disabling, and the notification a server publishes.

A client enables push for one device by naming its app server's JID and the node there (§5),
optionally with a ``pubsub#publish-options`` form whose fields (typically a secret) the server
must repeat on every publish; it disables one node or every node of an app server (§6). The
notification (§7) is a XEP-0060 publish to that node whose item holds ``<notification/>`` with
an ``urn:xmpp:push:summary`` form. This module models only the summary fields schnack sends:
``message-count`` and ``last-message-sender``; no message content is ever carried.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from ..jid import JID, JIDError
from ..xml import element, qname
from .dataforms import DataForm, DataFormError, Field
from .pubsub import PUBLISH_OPTIONS, Item, Publish, PubSubError

NS = "urn:xmpp:push:0"
SUMMARY = "urn:xmpp:push:summary"
ENABLE = qname(NS, "enable")
DISABLE = qname(NS, "disable")
NOTIFICATION = qname(NS, "notification")
_X = qname("jabber:x:data", "x")


class PushError(ValueError):
    """An enable, disable or notification element that breaks XEP-0357."""


def _jid(el: Element) -> str:
    """The app server's JID (§5, §6: required), normalised."""
    value = el.get("jid")
    if not value:
        raise PushError("name the app server in 'jid'")
    try:
        return str(JID.parse(value))
    except JIDError as err:
        raise PushError(f"'jid' is not a valid JID: {err}") from None


@dataclass(frozen=True)
class Enable:
    """§5: enable notifications to ``node`` at app server ``jid``, with optional publish-options."""

    jid: str
    node: str
    options: DataForm | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Enable:
        if el.tag != ENABLE:
            raise PushError(f"expected <enable xmlns='{NS}'/>, got {el.tag}")
        node = el.get("node")
        if not node:
            raise PushError("name the node at the app server in 'node'")
        forms = el.findall(_X)
        if len(forms) > 1:
            raise PushError("at most one publish-options form")
        options = None
        if forms:
            try:
                options = DataForm.from_xml(forms[0])
            except DataFormError as err:
                raise PushError(f"bad publish-options form: {err}") from None
            # §5: the form is submitted with the FORM_TYPE of XEP-0060 publish-options.
            if options.type != "submit" or options.form_type != PUBLISH_OPTIONS:
                raise PushError(f"the form must be a submitted {PUBLISH_OPTIONS} form")
        return cls(_jid(el), node, options)

    def to_xml(self) -> Element:
        enable = element(ENABLE, {"jid": self.jid, "node": self.node})
        if self.options is not None:
            enable.append(self.options.to_xml())
        return enable


@dataclass(frozen=True)
class Disable:
    """§6: disable ``node`` at app server ``jid``, or every node there when ``node`` is None."""

    jid: str
    node: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Disable:
        if el.tag != DISABLE:
            raise PushError(f"expected <disable xmlns='{NS}'/>, got {el.tag}")
        return cls(_jid(el), el.get("node") or None)

    def to_xml(self) -> Element:
        return element(DISABLE, {"jid": self.jid, "node": self.node})


@dataclass(frozen=True)
class Notification:
    """§7: the ``<notification/>`` item payload with the summary form (counts and sender only)."""

    message_count: int | None = None
    last_sender: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Notification:
        if el.tag != NOTIFICATION:
            raise PushError(f"expected <notification xmlns='{NS}'/>, got {el.tag}")
        summary = None
        for x in el.findall(_X):
            try:
                form = DataForm.from_xml(x)
            except DataFormError as err:
                raise PushError(f"bad summary form: {err}") from None
            if form.form_type == SUMMARY:
                summary = form
        if summary is None:
            return cls()
        count = summary.value("message-count")
        if count is not None and not (count.isascii() and count.isdigit()):
            raise PushError(f"message-count must be a number, got {count!r}")
        return cls(int(count) if count is not None else None, summary.value("last-message-sender"))

    def to_xml(self) -> Element:
        fields = [Field("FORM_TYPE", "hidden", values=(SUMMARY,))]
        if self.message_count is not None:
            fields.append(Field("message-count", values=(str(self.message_count),)))
        if self.last_sender is not None:
            fields.append(Field("last-message-sender", values=(self.last_sender,)))
        return element(NOTIFICATION, children=[DataForm("submit", tuple(fields)).to_xml()])


def publish(node: str, notification: Notification, options: DataForm | None = None) -> Publish:
    """§7: the XEP-0060 publish of ``notification`` to ``node``, repeating the client's publish-options."""
    return Publish(node, (Item(payload=notification.to_xml()),), options)


def notification_of(pubsub: Element) -> tuple[Publish, Notification]:
    """Read a §7 publish (the ``<pubsub/>`` element): the publish and its notification."""
    try:
        request = Publish.from_xml(pubsub)
    except PubSubError as err:
        raise PushError(f"not a publish: {err}") from None
    if len(request.items) != 1 or request.items[0].payload is None:
        raise PushError("a notification is published as one item")
    return request, Notification.from_xml(request.items[0].payload)
