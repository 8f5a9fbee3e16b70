"""XEP-0045 payloads (join, user, admin, owner), XEP-0249, XEP-0421, XEP-0425 and the key warnings:
round trips, wire shapes and the errors bad input gets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from schnack.xmpp.jid import JID
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.dataforms import DataForm, Field
from schnack.xmpp.payloads.muc import (
    AdminQuery,
    Decline,
    Destroy,
    DirectInvite,
    History,
    Invite,
    Item,
    Join,
    KeyWarnings,
    Moderate,
    MucError,
    OccupantId,
    OwnerQuery,
    Retraction,
    UserX,
)  # fmt: skip
from schnack.xmpp.xml import Element, serialize

MUC = "http://jabber.org/protocol/muc"


def el(xml: str) -> Element:
    return parse_frame(xml.encode(), 10**6)


def reparse(payload: object) -> Element:
    return el(serialize(payload.to_xml()))  # type: ignore[attr-defined]


@pytest.mark.parametrize("payload", [
    Join(),
    Join("secret", History(maxstanzas=20)),
    Join(None, History(maxchars=65000, seconds=180, since=datetime(2026, 12, 2, 10, 0, tzinfo=UTC))),
    UserX(),
    UserX(items=(Item("member", "participant", JID.parse("a@b/c"), "nick", "why", "mod", JID.parse("m@b")),),
          statuses=(100, 110, 201)),
    UserX(invites=(Invite(to=JID.parse("x@y"), reason="come"),), password="pw"),
    UserX(invites=(Invite(from_=JID.parse("a@b")),), declines=(Decline(to=JID.parse("c@d"), reason="no"),)),
    UserX(items=(Item("none", "none"),), destroy=Destroy(JID.parse("new@groups.example"), "moved")),
    AdminQuery((Item(affiliation="outcast", jid=JID.parse("eve@example"), reason="spam"),)),
    AdminQuery((Item(role="none", nick="bob", reason="calm down"), Item(role="visitor", nick="carol"))),
    OwnerQuery(),
    OwnerQuery(form=DataForm("submit", (Field("muc#roomconfig_membersonly", values=("1",)),))),
    OwnerQuery(destroy=Destroy(reason="done")),
    DirectInvite(JID.parse("room@groups.example"), "pw", "join us", True, "t1"),
    DirectInvite(JID.parse("room@groups.example")),
    OccupantId("dGhlIGlk"),
    Moderate("stanza-id-1", "spam"),
    Moderate("stanza-id-2"),
    Retraction("sid", JID.parse("room@groups.example/mod"), "occ", "spam"),
    Retraction(None, JID.parse("room@groups.example/mod"), None, None, datetime(2026, 12, 2, 10, 0, tzinfo=UTC)),
    KeyWarnings(((JID.parse("a@example"), "no-keys"), (JID.parse("b@example"), "hidden-keys"))),
    KeyWarnings(()),
])  # fmt: skip
def test_round_trip(payload: object) -> None:
    assert type(payload).from_xml(reparse(payload)) == payload  # type: ignore[attr-defined]


def test_join_as_clients_send_it() -> None:
    join = Join.from_xml(el(f"<x xmlns='{MUC}'><history maxstanzas=' 5 ' since='2026-12-02T10:00:00Z'/>"
                            "<password>pw</password></x>"))
    assert join.password == "pw" and join.history is not None
    assert join.history.maxstanzas == 5
    assert join.history.since == datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def test_user_x_wire_shape() -> None:
    x = UserX(items=(Item("owner", "moderator", JID.parse("alice@example/phone")),), statuses=(110,)).to_xml()
    assert serialize(x) == (
        f"<x xmlns='{MUC}#user'><item affiliation='owner' role='moderator' jid='alice@example/phone'/>"
        "<status code='110'/></x>").replace("'", '"')


def test_admin_items_keep_their_namespace() -> None:
    query = AdminQuery((Item(affiliation="member", jid=JID.parse("bob@example"), reason="welcome"),)).to_xml()
    assert serialize(query) == (
        f'<query xmlns="{MUC}#admin"><item affiliation="member" jid="bob@example"><reason>welcome</reason>'
        "</item></query>")


@pytest.mark.parametrize(("xml", "condition"), [
    (f"<x xmlns='{MUC}'><history maxstanzas='-1'/></x>", "bad-request"),
    (f"<x xmlns='{MUC}'><history maxchars='lots'/></x>", "bad-request"),
    (f"<x xmlns='{MUC}'><history since='yesterday'/></x>", "bad-request"),
    (f"<x xmlns='{MUC}#user'><item affiliation='king'/></x>", "bad-request"),
    (f"<x xmlns='{MUC}#user'><item role='god'/></x>", "bad-request"),
    (f"<x xmlns='{MUC}#user'><item jid='a@@b'/></x>", "jid-malformed"),
    (f"<x xmlns='{MUC}#user'><status/></x>", "bad-request"),
    (f"<x xmlns='{MUC}#user'><invite to='not a jid@'/></x>", "jid-malformed"),
    (f"<query xmlns='{MUC}#admin'/>", "bad-request"),
    (f"<query xmlns='{MUC}#owner'><x xmlns='jabber:x:data' type='bogus'/></query>", "bad-request"),
    ("<x xmlns='jabber:x:conference'/>", "bad-request"),
    ("<occupant-id xmlns='urn:xmpp:occupant-id:0'/>", "bad-request"),
    ("<moderate xmlns='urn:xmpp:message-moderate:1'/>", "bad-request"),
    ("<moderate xmlns='urn:xmpp:message-moderate:1' id='x'/>", "feature-not-implemented"),
    ("<retract xmlns='urn:xmpp:message-retract:1' id='x'/>", "bad-request"),
    ("<warnings xmlns='https://schnack.im/protocol/muc-keys'><member jid='a@b' problem='bad'/></warnings>",
     "bad-request"),
])  # fmt: skip
def test_bad_input(xml: str, condition: str) -> None:
    element = el(xml)
    parsers: dict[str, Any] = {
        f"{{{MUC}}}x": Join, f"{{{MUC}#user}}x": UserX, "{jabber:x:conference}x": DirectInvite,
        f"{{{MUC}#admin}}query": AdminQuery, f"{{{MUC}#owner}}query": OwnerQuery,
        "{urn:xmpp:occupant-id:0}occupant-id": OccupantId, "{urn:xmpp:message-moderate:1}moderate": Moderate,
        "{urn:xmpp:message-retract:1}retract": Retraction, "{https://schnack.im/protocol/muc-keys}warnings": KeyWarnings,
    }
    with pytest.raises(MucError) as raised:
        parsers[element.tag].from_xml(element)
    assert raised.value.condition == condition


def test_wrong_elements_are_refused() -> None:
    for parser in (Join, UserX, AdminQuery, OwnerQuery, DirectInvite, OccupantId, Moderate, Retraction, KeyWarnings):
        with pytest.raises(MucError):
            parser.from_xml(el("<other xmlns='urn:example'/>"))
