"""Compliance checks of the stream itself: what its features offer and what logging in can do.

Entity capabilities in the features (XEP-0115 §6.3), roster versioning (RFC 6121 §2.6), stream
management with resumption (XEP-0198), client state indication (XEP-0352), a direct TLS port
(XEP-0368), SASL2 (XEP-0388) and FAST tokens (XEP-0484).
"""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
import uuid

import aiodns
import pycares

from ...xmpp import ns
from ...xmpp.payloads import csi, fast, sasl2
from ...xmpp.payloads.caps import C, Caps, CapsError, compute_ver
from ...xmpp.payloads.sm import FEATURE as SM_FEATURE
from ...xmpp.payloads.sm import Resume, Resumed
from ...xmpp.xml import element, qname
from ..errors import ClientError
from ..net import DIRECT_TLS_PORT, Endpoint, Link
from .base import Context, Result, Skip, check, passed
from .session import CheckFailed, Refused

_ROSTER_QUERY = qname(ns.ROSTER, "query")
_ROSTER_VER = qname(ns.ROSTER_VER, "ver")
_PING = qname(ns.PING, "ping")
SOFTWARE = "schnack compliance check"


def user_agent(ctx: Context) -> sasl2.UserAgent:
    """XEP-0388 §2.3: one stable device id per account, so that repeated runs replace the token
    they were given (XEP-0484) instead of adding a device each time."""
    device = uuid.uuid5(uuid.NAMESPACE_URL, f"xmpp:{ctx.account(0).jid}#{SOFTWARE}")
    return sasl2.UserAgent(str(device), SOFTWARE, None)


@check("XEP-0115 §6.3", "Entity Capabilities")
async def check_caps(ctx: Context) -> Result:
    """The server's caps in its stream features, and a ver that matches its disco#info (§5.1)."""
    session = await ctx.session(0)
    found = session.features.find(C)
    if found is None:
        raise CheckFailed(f"no <c xmlns='{ns.CAPS}'/> in the stream features", received=session.features)
    try:
        caps = Caps.from_xml(found)
    except CapsError as err:
        raise CheckFailed(f"unusable caps in the stream features: {err}", received=found) from None
    try:
        info = await ctx.disco_info(ctx.domain, node=caps.disco_node)
    except Refused as err:
        raise CheckFailed(f"the caps node {caps.disco_node} cannot be queried (§6.2): {err.reason}",
                          received=err.reply) from None
    try:
        computed = compute_ver(info, caps.hash)
    except CapsError:
        return passed(f"ver {caps.ver} (hash {caps.hash}, which this check cannot compute)")
    if computed != caps.ver:
        raise CheckFailed(f"ver {caps.ver} does not match the domain's disco#info, which hashes to {computed}",
                          received=found)
    return passed(f"ver {caps.ver} matches the domain's disco#info")


@check("RFC 6121 §2.6", "Roster Versioning")
async def check_roster_versioning(ctx: Context) -> Result:
    """The ``ver`` stream feature (§2.6.1), a version in the roster result (§2.6.3), and that
    asking again with that version is answered (empty, or with the roster)."""
    session = await ctx.session(0)
    if session.features.find(_ROSTER_VER) is None:
        raise CheckFailed(f"no <ver xmlns='{ns.ROSTER_VER}'/> in the stream features", received=session.features)
    reply = await session.iq("get", element(_ROSTER_QUERY, {"ver": ""}))
    query = reply.find(_ROSTER_QUERY)
    version = query.get("ver") if query is not None else None
    if version is None:
        raise CheckFailed("the roster result carries no 'ver' although versioning was asked for", received=reply)
    again = await session.iq("get", element(_ROSTER_QUERY, {"ver": version}))
    unchanged = again.find(_ROSTER_QUERY) is None
    return passed(f"version {version!r}; asked again: {'empty result' if unchanged else 'the roster'}")


@check("XEP-0198 §3-§5", "Stream Management")
async def check_stream_management(ctx: Context) -> Result:
    """Enabling with resumption (§3), counting (§4), and resuming after the connection dropped (§5)."""
    main = await ctx.session(0)
    if main.features.find(SM_FEATURE) is None:
        raise CheckFailed("no <sm xmlns='urn:xmpp:sm:3'/> in the stream features", received=main.features)
    async with ctx.extra(0, available=False) as session:
        enabled = await session.enable_sm()
        if not enabled.resume or not enabled.id:
            raise CheckFailed("stream management was enabled without resumption (§5), which mobile apps need")
        await session.iq("get", element(_PING))
        h = await session.request_ack()
        if h != 1:
            raise CheckFailed(f"the server counted {h} stanzas handled after one iq (§4)")
        session.abort()
        assert session.handled is not None
        link = await ctx.link(0, resume=Resume(session.handled, enabled.id))
        try:
            if not isinstance(link.resumption, Resumed):
                raise CheckFailed(f"resuming the session after the connection dropped failed: {link.resumption}")
        finally:
            await link.close(timeout=2.0)
    return passed(f"enabled with resumption (max {enabled.max} s), acknowledged, resumed")


@check("XEP-0352 §4", "Client State Indication")
async def check_csi(ctx: Context) -> Result:
    """The ``csi`` stream feature, and a stream that goes on serving after inactive and active."""
    session = await ctx.session(0)
    if session.features.find(csi.FEATURE) is None:
        raise CheckFailed(f"no <csi xmlns='{csi.NS}'/> in the stream features", received=session.features)
    session.send(csi.ClientState(active=False).to_xml())
    await session.iq("get", element(_PING))
    session.send(csi.ClientState(active=True).to_xml())
    await session.iq("get", element(_PING))
    return passed("inactive and active accepted")


async def _direct_tls_records(domain: str) -> list[tuple[str, int]]:
    resolver = aiodns.DNSResolver(timeout=3, tries=1)
    try:
        result = await resolver.query_dns(f"_xmpps-client._tcp.{domain}", "SRV")
    except aiodns.error.DNSError:
        return []
    finally:
        await resolver.close()
    records = [a.data for a in result.answer if isinstance(a.data, pycares.SRVRecordData)]
    return [(r.target.rstrip("."), r.port) for r in sorted(records, key=lambda r: r.priority) if r.target != "."]


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@check("XEP-0368 §3", "SRV records for XMPP over TLS")
async def check_direct_tls(ctx: Context) -> Result:
    """A login over TLS from the first byte, where DNS's ``_xmpps-client._tcp`` records point;
    without records, on the direct TLS listener given (or port 5223 of the server), with the
    record the operator should publish."""
    domain = ctx.domain
    records = await _direct_tls_records(domain)
    fallback = ctx.settings.direct_tls or ((ctx.settings.server or (domain, 0))[0], DIRECT_TLS_PORT)
    places = records or [fallback]
    failures = []
    for host, port in places:
        try:
            link = await ctx.link(0, places=[Endpoint(host, port, direct_tls=True)])
        except ClientError as err:
            failures.append(str(err))
            continue
        obj = link.writer.get_extra_info("ssl_object")
        alpn = obj.selected_alpn_protocol() if isinstance(obj, ssl.SSLObject) else None
        await link.close(timeout=2.0)
        how = f"logged in over direct TLS at {host}:{port} (ALPN {alpn or 'not negotiated'})"
        if records:
            return passed(f"{how}, found in DNS")
        # An SRV target is a host name (RFC 2782), never an address: then the domain stands in.
        target = domain if _is_address(host) else host
        return passed(f"{how}; DNS has no _xmpps-client._tcp.{domain} record yet, publish: "
                      f"_xmpps-client._tcp.{domain}. 3600 IN SRV 0 5 {port} {target}.")
    where = "the _xmpps-client._tcp records" if records else f"{fallback[0]}:{fallback[1]} (no SRV record)"
    raise CheckFailed(f"no direct TLS login at {where}: {'; '.join(failures)}")


async def _sasl2_link(ctx: Context) -> Link:
    link = await ctx.link(0, user_agent=user_agent(ctx))
    if link.stream.sasl2_features is None:
        await link.close(timeout=2.0)
        raise CheckFailed(f"no <authentication xmlns='{sasl2.NS}'/> in the stream features: "
                          "the login went the RFC 6120 way")
    return link


@check("XEP-0388 §2", "Extensible SASL Profile (SASL2)")
async def check_sasl2(ctx: Context) -> Result:
    """A login through ``<authenticate/>`` with a user agent (§2.3-§2.6)."""
    link = await _sasl2_link(ctx)
    try:
        features = link.stream.sasl2_features
        assert features is not None
        found = features.find(sasl2.AUTHENTICATION)
        assert found is not None
        offer = sasl2.Authentication.from_xml(found)
        bind2 = " and Bind 2" if offer.find(qname("urn:xmpp:bind:0", "bind")) is not None else ""
        return passed(f"logged in with {link.stream.mechanism}{bind2}; offered: {', '.join(offer.mechanisms)}")
    finally:
        await link.close(timeout=2.0)


@check("XEP-0484 §3", "Fast Authentication Streamlining Tokens (FAST)")
async def check_fast(ctx: Context) -> Result:
    """A token requested inline in SASL2 (§3.2), then a login with it (§3.4)."""
    try:
        link = await _sasl2_link(ctx)
    except CheckFailed as err:
        raise Skip(f"needs SASL2: {err.reason}") from None
    try:
        features = link.stream.sasl2_features
        assert features is not None
        found = features.find(sasl2.AUTHENTICATION)
        assert found is not None
        if sasl2.Authentication.from_xml(found).find(fast.FAST) is None:
            raise CheckFailed(f"no <fast xmlns='{fast.NS}'/> inline in the SASL2 features", received=found)
        token = link.stream.token
        if token is None:
            raise CheckFailed("a token was requested inline, but the success carried none")
    finally:
        await link.close(timeout=2.0)
    again = await ctx.link(0, user_agent=user_agent(ctx), token=token)
    try:
        mechanism = again.stream.mechanism or ""
        if not mechanism.startswith("HT-"):
            raise CheckFailed(f"the login with the token fell back to {mechanism}: the token was refused")
        return passed(f"token for {token.mechanism}, logged in with it")
    finally:
        with contextlib.suppress(ClientError, OSError):
            await again.close(timeout=2.0)
