"""XEP-0388 SASL2 on client streams, with XEP-0386 Bind 2, XEP-0198 inside SASL2 and XEP-0509.

Every success and failure path of the exchange, the inline requests (Bind 2 with carbons, CSI and
stream management; resumption), and the configuration version that makes pipelining safe.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.modules.carbons import CarbonsState
from schnack.server.modules.sm import SmState
from schnack.server.sessions import Session
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads import bind2, sm
from schnack.xmpp.payloads import sasl2 as payload
from schnack.xmpp.sasl import SaslClient
from schnack.xmpp.xml import element, qname, serialize

from ..harness import add_user, running
from .sasl2_wire import (
    AGENT,
    PASSWORD,
    SASL2,
    SM,
    Wire,
    authenticate,
    bind,
    failure,
    scram,
)

FEATURES = qname(ns.STREAMS, "features")
MESSAGE = qname(ns.CLIENT, "message")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(tmp_path, modules={"e2e": {"policy": "optional"},
                                          "sm": {"ack_after_stanzas": 1000, "ack_after_seconds": 300}}) as srv:
        await add_user(srv, "alice", PASSWORD)
        await add_user(srv, "bob", PASSWORD)
        yield srv


def success_of(out: list[Element]) -> payload.Success:
    assert out and out[0].tag == payload.SUCCESS, [serialize(el) for el in out]
    # §2.6.1: the features of the authenticated stream follow at once, without a restart.
    assert out[1].tag == FEATURES
    return payload.Success.from_xml(out[0])


async def test_offered_on_encrypted_streams_with_its_inline_features(server: Server) -> None:
    features = await Wire(server).open()
    found = features.find(payload.AUTHENTICATION)
    assert found is not None
    offer = payload.Authentication.from_xml(found)
    assert offer.mechanisms[0] == "SCRAM-SHA-256-PLUS" and "PLAIN" in offer.mechanisms
    bind_offer = offer.find(bind2.BIND)
    assert bind_offer is not None
    assert set(bind2.BindFeature.from_xml(bind_offer).inline) == {"urn:xmpp:carbons:2", "urn:xmpp:csi:0", SM}
    assert offer.find(sm.FEATURE) is not None
    fast = offer.find("{urn:xmpp:fast:0}fast")
    assert fast is not None
    assert [m.text for m in fast] == ["HT-SHA-256-EXPR", "HT-SHA-256-ENDP", "HT-SHA-256-NONE"]
    # XEP-0509: the version comes last and is the same for the same offer.
    assert features[-1].tag == payload.CONFIG_VERSION
    assert (await Wire(server).open())[-1].get("value") == features[-1].get("value")
    # Before TLS there is no SASL2: it would carry the password's proof in the clear.
    plain = await Wire(server, secure=False).open()
    assert plain.find(payload.AUTHENTICATION) is None


async def test_scram_success_carries_the_server_proof_then_the_features(server: Server) -> None:
    wire = Wire(server)
    await wire.open()
    out = await scram(wire)
    success = success_of(out)
    assert success.authorization_identifier == "alice@localhost"
    assert (success.additional_data or b"").startswith(b"v=")
    assert out[1].find(qname(ns.BIND, "bind")) is not None
    # Without Bind 2 the client binds the RFC 6120 way on the same stream.
    reply = await wire.send(f"<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='{ns.BIND}'>"
                            "<resource>desk</resource></bind></iq>")
    assert reply[0].get("type") == "result" and wire.stream.session is not None
    assert str(wire.stream.session.jid) == "alice@localhost/desk"


@pytest.mark.parametrize(
    ("request_xml", "condition", "text"),
    [
        (f"<authenticate xmlns='{SASL2}' mechanism='DIGEST-MD5'><initial-response/></authenticate>",
         "invalid-mechanism", "DIGEST-MD5 is not offered"),
        (f"<authenticate xmlns='{SASL2}' mechanism='HT-SHA-256-NONE'><initial-response>YQBi</initial-response>"
         "</authenticate>", "malformed-request", "a token login needs <fast xmlns='urn:xmpp:fast:0'/>"),
        (f"<authenticate xmlns='{SASL2}'/>", "malformed-request", "<authenticate/> needs 'mechanism'"),
        (f"<response xmlns='{SASL2}'>YQ==</response>", "malformed-request", "no authentication in progress"),
        (f"<abort xmlns='{SASL2}'/>", "aborted", "authentication aborted"),
        (f"<authenticate xmlns='{SASL2}' mechanism='SCRAM-SHA-256'><initial-response>!!</initial-response>"
         "</authenticate>", "malformed-request", "SASL data is not valid base64"),
    ],
)
async def test_failures_name_the_condition(server: Server, request_xml: str, condition: str, text: str) -> None:
    wire = Wire(server)
    await wire.open()
    assert failure(await wire.send(request_xml)) == (condition, text)
    # §2.6.2: the stream stays unauthenticated and usable.
    assert not wire.stream.closed and not wire.stream.authenticated
    assert success_of(await scram(wire)).authorization_identifier == "alice@localhost"


async def test_wrong_password_then_too_many_failures_end_the_stream(server: Server) -> None:
    wire = Wire(server)
    await wire.open()
    assert failure(await scram(wire, password="wrong")) == ("not-authorized", "wrong username or password")
    assert failure(await scram(wire, user="nobody")) == ("not-authorized", "wrong username or password")
    for _ in range(2):
        await scram(wire, password="wrong")
    out = await scram(wire, password="wrong")
    assert failure(out)[0] == "not-authorized"
    assert out[-1].tag == qname(ns.STREAMS, "error") and wire.stream.closed
    assert out[-1][0].tag == qname(ns.STREAM_ERRORS, "policy-violation")


async def test_a_challenge_response_exchange_needs_the_right_channel_binding(server: Server) -> None:
    wire = Wire(server)
    await wire.open()
    client = SaslClient("alice", PASSWORD, ["SCRAM-SHA-256-PLUS"], channel_binding=("tls-exporter", b"X" * 32))
    challenge = await wire.send(authenticate(client.mechanism, client.initial()))
    response = client.respond(payload.Challenge.from_xml(challenge[0]).data)
    assert failure(await wire.send(payload.Response(response).to_xml())) == (
        "not-authorized", "channel binding does not match"
    )


async def test_bind2_with_carbons_csi_and_sm_inline(server: Server) -> None:
    wire = Wire(server)
    await wire.open()
    out = await scram(wire, bind("Conversations", "<enable xmlns='urn:xmpp:carbons:2'/>",
                                 "<inactive xmlns='urn:xmpp:csi:0'/>", f"<enable xmlns='{SM}' resume='true'/>"))
    success = success_of(out)
    jid = JID.parse(success.authorization_identifier)
    assert jid.bare == JID.parse("alice@localhost") and jid.resource is not None
    assert jid.resource.startswith("Conversations/")
    bound = success.find(bind2.BOUND)
    assert bound is not None
    enabled = sm.Enabled.from_xml(bind2.Bound.from_xml(bound).results[0])
    assert enabled.resume and enabled.id
    # The stream is bound and has stream management on: its features offer neither again.
    assert out[1].find(qname(ns.BIND, "bind")) is None and out[1].find(sm.FEATURE) is None
    session = wire.stream.session
    assert session is not None and session.jid == jid
    assert server.sessions.get(jid) is session
    assert session.slot(CarbonsState).enabled
    assert session.slot(SmState).enabled
    # CSI: the session began inactive, so a chat state waits until the client is active again.
    bob = Wire(server)
    await bob.open()
    await scram(bob, bind("bob"), user="bob")
    await bob.send(f"<message xmlns='jabber:client' to='{jid}' type='chat'>"
                   "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    assert wire.take() == []
    released = await wire.send("<active xmlns='urn:xmpp:csi:0'/>")
    assert [el.tag for el in released] == [MESSAGE]


async def test_the_same_device_gets_the_same_resource(server: Server) -> None:
    resources = []
    for agent in (AGENT, AGENT, payload.UserAgent("another-device"), None, None):
        wire = Wire(server)
        await wire.open()
        out = await scram(wire, bind("schnack"), agent=agent)
        resources.append(JID.parse(success_of(out).authorization_identifier).resource)
        await wire.stream.connection_lost()
    assert resources[0] == resources[1]
    assert len(set(resources)) == 4
    # XEP-0386 §2.2.1: the user-agent id does not show in the resource.
    assert all(str(AGENT.id) not in (r or "") for r in resources)


async def test_binding_again_ends_the_earlier_session_of_the_same_client(server: Server) -> None:
    first = Wire(server)
    await first.open()
    await scram(first, bind())
    second = Wire(server)
    await second.open()
    await scram(second, bind())
    assert first.stream.closed
    assert b"conflict" in bytes(first.conn.to_client)
    assert len(server.sessions.resources(JID.parse("alice@localhost"))) == 1


async def test_what_reaches_the_new_session_while_it_replaces_the_old_is_counted(server: Server) -> None:
    """XEP-0198 §4 with XEP-0386: a stanza routed to the resource while the session it replaces
    ends does not go ahead of the success, and what the client gets is what stream management
    counts, so acknowledging it is accepted."""
    first = Wire(server)
    await first.open()
    await scram(first, bind("schnack", f"<enable xmlns='{SM}'/>"))

    async def late_reply(session: Session) -> None:
        attrs = {"type": "result", "id": "late", "from": "localhost", "to": str(session.jid)}
        await server.router.send(element(qname(ns.CLIENT, "iq"), attrs))

    server.hooks.add("session-closed", late_reply)
    second = Wire(server)
    await second.open()
    out = await scram(second, bind("schnack", f"<enable xmlns='{SM}'/>"))
    success_of(out)
    received = [el for el in out[2:] if el.tag in (qname(ns.CLIENT, "iq"), MESSAGE)]
    assert await second.send(f"<a xmlns='{SM}' h='{len(received)}'/>") == []
    assert not second.stream.closed
    assert await second.send(f"<r xmlns='{SM}'/>") != []
    assert first.stream.closed


async def test_resuming_an_unknown_session_fails_and_binds_a_new_one(server: Server) -> None:
    wire = Wire(server)
    await wire.open()
    out = await scram(wire, sm.Resume(7, "no-such-session").to_xml(), bind())
    success = success_of(out)
    failed = success.find(sm.FAILED)
    assert failed is not None and sm.Failed.from_xml(failed).condition == "item-not-found"
    assert success.find(bind2.BOUND) is not None
    assert JID.parse(success.authorization_identifier).resource is not None


async def test_resumption_inside_sasl2_sends_exactly_what_was_missed(server: Server) -> None:
    first = Wire(server)
    await first.open()
    out = await scram(first, bind("schnack", f"<enable xmlns='{SM}' resume='true'/>"))
    success = success_of(out)
    jid = success.authorization_identifier
    bound_el = success.find(bind2.BOUND)
    assert bound_el is not None
    bound = bind2.Bound.from_xml(bound_el)
    previd = sm.Enabled.from_xml(bound.results[0]).id
    bob = Wire(server)
    await bob.open()
    await scram(bob, bind("bob"), user="bob")
    await bob.send(f"<message xmlns='jabber:client' to='{jid}' type='chat' id='m1'><body>seen</body></message>")
    assert [el.get("id") for el in first.take()] == ["m1"]
    # The connection dies without a closed stream: the session hibernates.
    await first.stream.connection_lost()
    for n in (2, 3):
        await bob.send(f"<message xmlns='jabber:client' to='{jid}' type='chat' id='m{n}'><body>{n}</body></message>")
    again = Wire(server)
    await again.open()
    out = await scram(again, sm.Resume(1, previd or "").to_xml(), bind())
    success = success_of(out)
    resumed = success.find(sm.RESUMED)
    assert resumed is not None and sm.Resumed.from_xml(resumed).previd == previd
    assert success.find(bind2.BOUND) is None
    assert success.authorization_identifier == jid
    assert [el.get("id") for el in out[2:] if el.tag == MESSAGE] == ["m2", "m3"]


async def test_a_stale_config_version_is_refused_without_penalty(server: Server) -> None:
    wire = Wire(server)
    features = await wire.open()
    stale = payload.ConfigVersion("stale", "opaque").to_xml()
    for _ in range(8):
        out = await scram(wire, stale)
        assert failure(out) == ("aborted", "configuration version mismatch")
        assert out[0].find(payload.CONFIG_VERSION_MISMATCH) is not None
    assert not wire.stream.closed
    current = features.find(payload.CONFIG_VERSION)
    assert current is not None
    assert success_of(await scram(wire, current)).authorization_identifier == "alice@localhost"


async def test_authenticate_right_behind_the_header_is_answered_in_order(server: Server) -> None:
    """XEP-0509: the header, the features, the success and the features again, from one flight."""
    probe = await Wire(server).open()
    version = probe.find(payload.CONFIG_VERSION)
    assert version is not None
    wire = Wire(server)
    client = SaslClient("alice", PASSWORD, ["PLAIN"], allow_plain=True)
    await wire.stream.on_open(qname(ns.STREAMS, "stream"), {"to": "localhost", "version": "1.0"}, ns.CLIENT)
    await wire.stream.on_element(authenticate("PLAIN", client.initial(), version, bind()))
    out = wire.take()
    assert [el.tag for el in out] == [FEATURES, payload.SUCCESS, FEATURES]


async def test_stanzas_before_authentication_are_refused(server: Server) -> None:
    wire = Wire(server)
    await wire.open()
    out = await wire.send("<message xmlns='jabber:client' to='bob@localhost'><body>hi</body></message>")
    assert out[-1].tag == qname(ns.STREAMS, "error") and wire.stream.closed
    assert out[-1][0].tag == qname(ns.STREAM_ERRORS, "not-authorized")


async def test_malformed_inline_requests_are_answered_not_fatal(server: Server) -> None:
    wire = Wire(server)
    await wire.open()
    out = await scram(
        wire,
        parse_frame(f"<resume xmlns='{SM}' previd='x' h='many'/>".encode(), 10**6),
        bind("t" * 1000 + "/evil", f"<enable xmlns='{SM}' max='forever'/>"),
        parse_frame(b"<request-token xmlns='urn:xmpp:fast:0'/>", 10**6),
    )
    success = success_of(out)
    failed = success.find(sm.FAILED)
    assert failed is not None and sm.Failed.from_xml(failed).condition == "bad-request"
    bound = success.find(bind2.BOUND)
    assert bound is not None
    assert sm.Failed.from_xml(bind2.Bound.from_xml(bound).results[0]).condition == "bad-request"
    resource = JID.parse(success.authorization_identifier).resource or ""
    assert resource.startswith("t" * 64 + "/") and "evil" not in resource
    assert success.find("{urn:xmpp:fast:0}token") is None
    assert not wire.stream.closed
