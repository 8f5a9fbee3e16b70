"""Logging in on real sockets: STARTTLS and direct TLS, every SASL mechanism, failures and throttling.

RFC 6120 §5 (STARTTLS), §6 (SASL), §7 (resource binding); XEP-0368 (direct TLS); RFC 5802 and
RFC 7677 (SCRAM); RFC 5929 and RFC 9266 (channel bindings); XEP-0440 (which bindings are offered).
slixmpp is the independent client; it binds channels with tls-unique only, which TLS 1.3 forbids,
so the -PLUS mechanisms on TLS 1.3 are driven by our own SASL client on a raw TLS socket.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.sasl import SaslClient, decode_b64, encode_b64
from schnack.xmpp.xml import qname

from ..harness import add_user, running
from .channel import binding_data, client_context
from .slix import PASSWORD, SlixClient
from .wire import Wire

pytestmark = pytest.mark.asyncio

LISTENERS = ("c2s", "c2s_tls")
TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3
SASL_CB = "urn:xmpp:sasl-cb:0"
_CHALLENGE = qname(ns.SASL, "challenge")
_SUCCESS = qname(ns.SASL, "success")
_FAILURE = qname(ns.SASL, "failure")


@pytest.fixture
async def clients() -> AsyncIterator[list[SlixClient | Wire]]:
    """Clients to disconnect when the test ends."""
    made: list[SlixClient | Wire] = []
    yield made
    for client in made:
        if isinstance(client, SlixClient):
            await client.stop()
        else:
            client.close()


async def tls_wire(server: Server, listener: str, version: ssl.TLSVersion = TLS13) -> tuple[Wire, Element]:
    """A raw connection secured by STARTTLS or direct TLS; return it with the features offered on TLS."""
    host, port = server.bound[listener][0]
    if listener == "c2s_tls":
        reader, writer = await asyncio.open_connection(host, port, ssl=client_context(version), server_hostname="localhost")
        wire = Wire(reader, writer)
        return wire, await wire.open()
    reader, writer = await asyncio.open_connection(host, port)
    wire = Wire(reader, writer)
    await wire.open()
    wire.send(f"<starttls xmlns='{ns.TLS}'/>")
    proceed = await wire.next()
    assert proceed is not None and proceed.tag == qname(ns.TLS, "proceed")
    await writer.start_tls(client_context(version), server_hostname="localhost")
    return wire, await wire.open()


def tls_of(wire: Wire) -> object:
    return wire.writer.get_extra_info("ssl_object")


def mechanisms(features: Element) -> list[str]:
    return [m.text or "" for m in features.iter(qname(ns.SASL, "mechanism"))]


def binding_types(features: Element) -> set[str]:
    """XEP-0440: the channel-binding types the server announces."""
    return {cb.get("type", "") for cb in features.iter(f"{{{SASL_CB}}}channel-binding")}


def condition(failure: Element) -> str:
    """The defined condition of a SASL <failure/> (RFC 6120 §6.5)."""
    assert failure.tag == _FAILURE, failure.tag
    return next(c.tag.rpartition("}")[2] for c in failure if c.tag != qname(ns.SASL, "text"))


async def authenticate(wire: Wire, client: SaslClient) -> Element:
    """Run one SASL exchange (RFC 6120 §6.4); return the <success/> or <failure/> that ends it."""
    wire.send(f"<auth xmlns='{ns.SASL}' mechanism='{client.mechanism}'>{encode_b64(client.initial())}</auth>")
    while True:
        el = await wire.next()
        assert el is not None, "the server closed the stream during SASL"
        if el.tag == _CHALLENGE:
            reply = encode_b64(client.respond(decode_b64(el.text or "")))
            wire.send(f"<response xmlns='{ns.SASL}'>{reply}</response>")
            continue
        if el.tag == _SUCCESS:
            # Raises unless the server proved that it knows the password (RFC 5802 §5.1 'v').
            client.success(decode_b64(el.text) if el.text else b"")
        return el


async def attempt(server: Server, user: str, password: str, mechanism: str = "SCRAM-SHA-256") -> Element:
    """One login attempt on a fresh direct-TLS connection; the element that ended SASL."""
    wire, features = await tls_wire(server, "c2s_tls")
    try:
        offered = mechanisms(features)
        assert mechanism in offered
        return await authenticate(wire, SaslClient(user, password, [mechanism], allow_plain=True))
    finally:
        wire.close()


# slixmpp ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
async def test_slixmpp_logs_in_with_each_mechanism(live_server: Server, clients: list[SlixClient | Wire],
                                                   listener: str, mechanism: str) -> None:
    await add_user(live_server, "alice", PASSWORD)
    alice = SlixClient(live_server, "alice@localhost/phone", listener=listener, mechanism=mechanism)
    clients.append(alice)
    assert await alice.start()
    assert [name for name, _ in alice.auths] == [mechanism]
    assert alice.failures == []
    assert alice.tls_version() == "TLSv1.3"
    assert str(alice.xmpp.boundjid) == "alice@localhost/phone"
    session = live_server.sessions.get(JID.parse("alice@localhost/phone"))
    assert session is not None and session.secure
    # After SASL the features offer binding, not SASL again (RFC 6120 §6.4.6).
    after = alice.features[-1]
    assert after.find(qname(ns.BIND, "bind")) is not None
    assert after.find(qname(ns.SASL, "mechanisms")) is None


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"])
async def test_slixmpp_plus_with_tls_unique_on_tls12(live_server: Server, clients: list[SlixClient | Wire],
                                                      listener: str, mechanism: str) -> None:
    """RFC 5929 §3: on TLS 1.2 slixmpp binds the channel with tls-unique, whatever XEP-0440 lists."""
    await add_user(live_server, "alice", PASSWORD)
    alice = SlixClient(live_server, "alice@localhost/desk", listener=listener, mechanism=mechanism, tls_max=TLS12)
    clients.append(alice)
    assert await alice.start()
    assert alice.tls_version() == "TLSv1.2"
    ((name, initial),) = alice.auths
    assert name == mechanism
    assert initial.startswith(b"p=tls-unique,")
    assert alice.failures == []


@pytest.mark.parametrize(("tls_max", "expected"), [(TLS12, "SCRAM-SHA-256-PLUS"), (TLS13, "SCRAM-SHA-256")],
                         ids=["tls1.2", "tls1.3"])
async def test_slixmpp_default_choice_succeeds_first_time(live_server: Server, clients: list[SlixClient | Wire],
                                                          tls_max: ssl.TLSVersion, expected: str) -> None:
    """The best mechanism slixmpp can use works at once: no failed attempt counts against the account."""
    await add_user(live_server, "alice", PASSWORD)
    for resource in ("one", "two", "three"):
        alice = SlixClient(live_server, f"alice@localhost/{resource}", tls_max=tls_max)
        clients.append(alice)
        assert await alice.start()
        assert [name for name, _ in alice.auths] == [expected]
        assert alice.failures == []


async def test_slixmpp_wrong_password_fails(live_server: Server, clients: list[SlixClient | Wire]) -> None:
    await add_user(live_server, "alice", PASSWORD)
    mallory = SlixClient(live_server, "alice@localhost/x", "not the password", mechanism="SCRAM-SHA-256")
    clients.append(mallory)
    assert not await mallory.start()
    assert mallory.failures == ["not-authorized"]
    assert live_server.sessions.resources(JID.parse("alice@localhost")) == []


# Channel binding with our own client on a raw TLS socket ----------------------------------------


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize(("version", "expected"), [
    (TLS13, {"tls-exporter", "tls-server-end-point"}),
    (TLS12, {"tls-server-end-point", "tls-unique"}),
], ids=["tls1.3", "tls1.2"])
async def test_channel_binding_types_offered(live_server: Server, listener: str, version: ssl.TLSVersion,
                                             expected: set[str]) -> None:
    """XEP-0440: the types that work on this connection; RFC 9266 §3 rules out tls-unique on TLS 1.3."""
    wire, features = await tls_wire(live_server, listener, version)
    try:
        assert binding_types(features) == expected
        assert mechanisms(features) == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    finally:
        wire.close()


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"])
@pytest.mark.parametrize(("version", "kind"), [
    (TLS13, "tls-exporter"),
    (TLS13, "tls-server-end-point"),
    (TLS12, "tls-server-end-point"),
    (TLS12, "tls-unique"),
], ids=["tls1.3-exporter", "tls1.3-end-point", "tls1.2-end-point", "tls1.2-unique"])
async def test_plus_login_with_channel_binding(live_server: Server, listener: str, mechanism: str,
                                               version: ssl.TLSVersion, kind: str) -> None:
    await add_user(live_server, "alice", PASSWORD)
    wire, features = await tls_wire(live_server, listener, version)
    try:
        assert mechanism in mechanisms(features) and kind in binding_types(features)
        client = SaslClient("alice", PASSWORD, [mechanism], channel_binding=(kind, binding_data(tls_of(wire), kind, live_server)))
        assert client.mechanism == mechanism
        result = await authenticate(wire, client)
        assert result.tag == _SUCCESS
        after = await wire.open()
        assert after.find(qname(ns.BIND, "bind")) is not None
        assert await wire.bind("laptop") == "alice@localhost/laptop"
    finally:
        wire.close()


@pytest.mark.parametrize(("version", "kind"), [(TLS13, "tls-exporter"), (TLS12, "tls-unique")],
                         ids=["tls1.3-exporter", "tls1.2-unique"])
async def test_binding_of_another_connection_is_refused(live_server: Server, version: ssl.TLSVersion,
                                                        kind: str) -> None:
    """A man in the middle holds two TLS connections; the data of his own one must not pass."""
    await add_user(live_server, "alice", PASSWORD)
    first, _ = await tls_wire(live_server, "c2s_tls", version)
    second, _ = await tls_wire(live_server, "c2s_tls", version)
    try:
        foreign = binding_data(tls_of(first), kind, live_server)
        assert foreign != binding_data(tls_of(second), kind, live_server)
        client = SaslClient("alice", PASSWORD, ["SCRAM-SHA-256-PLUS"], channel_binding=(kind, foreign))
        assert condition(await authenticate(second, client)) == "not-authorized"
    finally:
        first.close()
        second.close()


async def test_binding_to_another_certificate_is_refused(live_server: Server) -> None:
    """tls-server-end-point of some other certificate: the TLS was terminated by someone else."""
    await add_user(live_server, "alice", PASSWORD)
    wire, _ = await tls_wire(live_server, "c2s")
    try:
        other = hashlib.sha256(b"a certificate the server does not have").digest()
        client = SaslClient("alice", PASSWORD, ["SCRAM-SHA-256-PLUS"], channel_binding=("tls-server-end-point", other))
        assert condition(await authenticate(wire, client)) == "not-authorized"
    finally:
        wire.close()


async def test_binding_type_not_available_is_refused(live_server: Server) -> None:
    """tls-exporter asked for on TLS 1.2, where the server has none to compare."""
    await add_user(live_server, "alice", PASSWORD)
    wire, _ = await tls_wire(live_server, "c2s_tls", TLS12)
    try:
        client = SaslClient("alice", PASSWORD, ["SCRAM-SHA-256-PLUS"], channel_binding=("tls-exporter", bytes(32)))
        assert condition(await authenticate(wire, client)) == "not-authorized"
    finally:
        wire.close()


async def test_downgrade_from_plus_is_detected(live_server: Server) -> None:
    """RFC 5802 §6: a client saying 'y' (it could bind, but thinks we can't) means -PLUS was stripped."""
    await add_user(live_server, "alice", PASSWORD)
    wire, features = await tls_wire(live_server, "c2s_tls")
    try:
        assert "SCRAM-SHA-256-PLUS" in mechanisms(features)
        first = f"y,,n=alice,r={secrets.token_urlsafe(18)}".encode()
        wire.send(f"<auth xmlns='{ns.SASL}' mechanism='SCRAM-SHA-256'>{base64.b64encode(first).decode()}</auth>")
        failure = await wire.next()
        assert failure is not None and condition(failure) == "not-authorized"
    finally:
        wire.close()


# The authorization identity ---------------------------------------------------------------------


@pytest.mark.parametrize(("authzid", "authcid"), [
    ("Alice@LocalHost", "alice"),
    ("alice@localhost", "Alice"),
    ("ALICE", "alice"),
], ids=["jid-as-typed", "name-as-typed", "localpart"])
async def test_an_authzid_naming_the_account_in_another_case_is_the_account(
        live_server: Server, authzid: str, authcid: str) -> None:
    """RFC 6120 §6.3.8: the authzid is a JID, compared as one (RFC 7622 §3.2, §3.3 case-map both
    parts); the account is the one the login name maps to."""
    await add_user(live_server, "alice", PASSWORD)
    wire, features = await tls_wire(live_server, "c2s_tls")
    try:
        assert "PLAIN" in mechanisms(features)
        initial = encode_b64(f"{authzid}\0{authcid}\0{PASSWORD}".encode())
        wire.send(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{initial}</auth>")
        reply = await wire.next()
        assert reply is not None and reply.tag == _SUCCESS
        await wire.open()
        assert await wire.bind("desk") == "alice@localhost/desk"
    finally:
        wire.close()


async def test_slixmpp_with_an_authzid_in_another_case_logs_in_with_scram(
        live_server: Server, clients: list[SlixClient | Wire]) -> None:
    await add_user(live_server, "alice", PASSWORD)
    alice = SlixClient(live_server, "alice@localhost/phone", mechanism="SCRAM-SHA-256")
    alice.xmpp.credentials["authzid"] = "Alice@LocalHost"
    clients.append(alice)
    assert await alice.start()
    ((_, initial),) = alice.auths
    assert initial.startswith(b"n,a=Alice@LocalHost,")
    assert alice.failures == []


@pytest.mark.parametrize("authzid", ["bob@localhost", "alice@elsewhere.test", "alice@localhost/desk", "@@"])
async def test_an_authzid_naming_another_account_is_refused(live_server: Server, authzid: str) -> None:
    """RFC 6120 §6.4.5: acting for another entity is invalid-authzid; so is a full JID or a
    malformed one, which no account is."""
    await add_user(live_server, "alice", PASSWORD)
    await add_user(live_server, "bob", PASSWORD)
    wire, _ = await tls_wire(live_server, "c2s_tls")
    try:
        initial = encode_b64(f"{authzid}\0alice\0{PASSWORD}".encode())
        wire.send(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{initial}</auth>")
        reply = await wire.next()
        assert reply is not None and condition(reply) == "invalid-authzid"
    finally:
        wire.close()


# Failures, PLAIN and TLS ------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
async def test_wrong_password_and_unknown_user_fail_alike(live_server: Server, mechanism: str) -> None:
    """Both give <not-authorized/> (RFC 6120 §6.5.10), so replies don't tell which accounts exist."""
    await add_user(live_server, "alice", PASSWORD)
    assert condition(await attempt(live_server, "alice", "wrong", mechanism)) == "not-authorized"
    assert condition(await attempt(live_server, "nobody", "wrong", mechanism)) == "not-authorized"


async def test_retry_on_the_same_stream_after_a_failure(live_server: Server) -> None:
    """RFC 6120 §6.4.5: a mistyped password does not cost the client its connection."""
    await add_user(live_server, "alice", PASSWORD)
    wire, _ = await tls_wire(live_server, "c2s")
    try:
        wrong = SaslClient("alice", "typo", ["SCRAM-SHA-256"])
        assert condition(await authenticate(wire, wrong)) == "not-authorized"
        right = SaslClient("alice", PASSWORD, ["SCRAM-SHA-256"])
        assert (await authenticate(wire, right)).tag == _SUCCESS
        await wire.open()
        assert await wire.bind("retry") == "alice@localhost/retry"
    finally:
        wire.close()


@pytest.mark.parametrize("require_tls", [True, False])
async def test_plain_is_not_offered_before_tls(tmp_path: Path, require_tls: bool) -> None:
    """PLAIN sends the password itself: only over TLS (RFC 6120 §13.9.4), whether TLS is required or not."""
    async with running(tmp_path, listen=True, tls={"require_c2s": require_tls}) as server:
        await add_user(server, "alice", PASSWORD)
        wire = await Wire.connect(server)
        try:
            before = await wire.open()
            assert "PLAIN" not in mechanisms(before)
            assert not any(m.endswith("-PLUS") for m in mechanisms(before))
            assert mechanisms(before) == ([] if require_tls else ["SCRAM-SHA-256", "SCRAM-SHA-1"])
            plain_initial = encode_b64(SaslClient("alice", PASSWORD, ["PLAIN"], allow_plain=True).initial())
            wire.send(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{plain_initial}</auth>")
            failure = await wire.next()
            assert failure is not None and condition(failure) == "encryption-required"
            after = await wire.starttls()
            assert "PLAIN" in mechanisms(after)
            plain = SaslClient("alice", PASSWORD, ["PLAIN"], allow_plain=True)
            assert (await authenticate(wire, plain)).tag == _SUCCESS
        finally:
            wire.close()


async def in_band(server: Server, query: str) -> None:
    """Alice changes or deletes her account from another connection (XEP-0077 §3.2, §3.3)."""
    other, features = await tls_wire(server, "c2s_tls")
    try:
        await other.login("alice", PASSWORD, features)
        await other.bind("desk")
        other.send(f"<iq type='set' id='reg'><query xmlns='{ns.REGISTER}'>{query}</query></iq>")
        reply = await other.next()
        assert reply is not None and reply.get("type") == "result", reply
    finally:
        other.close()


@pytest.mark.parametrize("query", ["<username>alice</username><password>a new secret</password>", "<remove/>"],
                         ids=["password-changed", "account-deleted"])
async def test_a_login_begun_before_a_password_change_cannot_end_after_it(tmp_path: Path, query: str) -> None:
    """SCRAM checks the proof against the keys fetched at the client-first message; a password
    changed (or an account deleted) before the client-final message must not let the old
    password in, or whoever holds it finishes a login the change was meant to stop."""
    async with running(tmp_path, listen=True, modules={"enable": ["register"]}) as server:
        await add_user(server, "alice", PASSWORD)
        wire, _ = await tls_wire(server, "c2s_tls")
        try:
            client = SaslClient("alice", PASSWORD, ["SCRAM-SHA-256"])
            wire.send(f"<auth xmlns='{ns.SASL}' mechanism='{client.mechanism}'>{encode_b64(client.initial())}</auth>")
            challenge = await wire.next()
            assert challenge is not None and challenge.tag == _CHALLENGE
            await in_band(server, query)
            wire.send(f"<response xmlns='{ns.SASL}'>{encode_b64(client.respond(decode_b64(challenge.text or '')))}</response>")
            reply = await wire.next()
            assert reply is not None and condition(reply) == "not-authorized"
            assert server.sessions.resources(JID.parse("alice@localhost")) == []
        finally:
            wire.close()


# Resource binding -------------------------------------------------------------------------------


async def test_binding_a_bound_resource_replaces_the_old_session(tmp_path: Path, clients: list[SlixClient | Wire]) -> None:
    """RFC 6120 §7.7.2.2: schnack lets the new session win; the old one gets <conflict/> and is closed."""
    async with running(tmp_path, listen=True, modules={"e2e": {"policy": "optional"}}) as server:
        await add_user(server, "alice", PASSWORD)
        await add_user(server, "bob", PASSWORD)
        old = SlixClient(server, "alice@localhost/phone")
        clients.append(old)
        assert await old.start()
        new, _ = await tls_wire(server, "c2s_tls")
        clients.append(new)
        assert (await authenticate(new, SaslClient("alice", PASSWORD, ["SCRAM-SHA-256"]))).tag == _SUCCESS
        await new.open()
        assert await new.bind("phone") == "alice@localhost/phone"
        async with asyncio.timeout(30):
            await old.disconnected.wait()
        assert old.stream_errors == ["conflict"]
        (session,) = server.sessions.resources(JID.parse("alice@localhost"))
        assert session.jid == JID.parse("alice@localhost/phone")
        # Messages to the full JID reach the new session.
        bob = SlixClient(server, "bob@localhost/desk")
        clients.append(bob)
        assert await bob.start()
        bob.send("alice@localhost/phone", "which phone?", "q1")
        message = await new.next(30)
        assert message is not None and message.tag == qname(ns.CLIENT, "message")
        assert message.get("from") == "bob@localhost/desk"
        assert message.findtext(qname(ns.CLIENT, "body")) == "which phone?"


# Throttling -------------------------------------------------------------------------------------


async def test_failed_logins_throttle_the_account(tmp_path: Path, clients: list[SlixClient | Wire]) -> None:
    """RFC 6120 §13.8: past the limit the account refuses even the right password, for a while."""
    async with running(tmp_path, listen=True, limits={"failed_logins_per_account": 3}) as server:
        await add_user(server, "alice", PASSWORD)
        await add_user(server, "bob", PASSWORD)
        for _ in range(3):
            assert condition(await attempt(server, "alice", "guess")) == "not-authorized"
        assert condition(await attempt(server, "alice", PASSWORD)) == "temporary-auth-failure"
        assert condition(await attempt(server, "alice", PASSWORD, "PLAIN")) == "temporary-auth-failure"
        # A real client is told the same; another account from the same address is unaffected.
        alice = SlixClient(server, "alice@localhost/phone", mechanism="SCRAM-SHA-256")
        clients.append(alice)
        assert not await alice.start()
        assert alice.failures == ["temporary-auth-failure"]
        assert (await attempt(server, "bob", PASSWORD)).tag == _SUCCESS


async def test_successful_login_resets_the_account_count(tmp_path: Path) -> None:
    async with running(tmp_path, listen=True, limits={"failed_logins_per_account": 3}) as server:
        await add_user(server, "alice", PASSWORD)
        for _ in range(2):
            for _ in range(2):
                assert condition(await attempt(server, "alice", "typo")) == "not-authorized"
            assert (await attempt(server, "alice", PASSWORD)).tag == _SUCCESS


async def test_a_failure_counts_against_the_account_it_tried_not_an_earlier_one(tmp_path: Path) -> None:
    """A retry on the same stream (RFC 6120 §6.4.5) that fails before naming an account (here a
    channel binding this TLS 1.2 connection does not have) counts against the address, not
    against the account an earlier attempt named."""
    async with running(tmp_path, listen=True, limits={"failed_logins_per_account": 2}) as server:
        await add_user(server, "bob", PASSWORD)
        await add_user(server, "alice", PASSWORD)
        wire, _ = await tls_wire(server, "c2s_tls", TLS12)
        try:
            assert condition(await authenticate(wire, SaslClient("bob", "typo", ["SCRAM-SHA-256"]))) == "not-authorized"
            unbound = SaslClient("alice", PASSWORD, ["SCRAM-SHA-256-PLUS"], channel_binding=("tls-exporter", bytes(32)))
            assert condition(await authenticate(wire, unbound)) == "not-authorized"
        finally:
            wire.close()
        assert (await attempt(server, "bob", PASSWORD)).tag == _SUCCESS


async def test_failed_logins_throttle_the_address(tmp_path: Path) -> None:
    """Guessing across many accounts from one address blocks that address for every account."""
    limits = {"failed_logins_per_account": 100, "failed_logins_per_ip": 4}
    async with running(tmp_path, listen=True, limits=limits) as server:
        await add_user(server, "bob", PASSWORD)
        for user in ("ann", "ben", "cat", "dan"):
            assert condition(await attempt(server, user, "guess")) == "not-authorized"
        assert condition(await attempt(server, "bob", PASSWORD)) == "temporary-auth-failure"
