"""Compliance checks of the services a server offers next to messaging.

Group chat (XEP-0045) and its archive (XEP-0313 on a room), HTTP file upload with the CORS
headers web clients need (XEP-0363), push registrations (XEP-0357) and TURN credentials for
calls (XEP-0215).
"""

from __future__ import annotations

import asyncio

import aiohttp
from aioice import stun
from aioice.turn import create_turn_endpoint

from ...xmpp import ns
from ...xmpp.jid import JID
from ...xmpp.payloads import extdisco, mam, push, upload
from ...xmpp.payloads.dataforms import DataForm
from ...xmpp.payloads.muc import JOIN, MUC, OWNER_QUERY, USER_X
from ...xmpp.xml import element, qname, sub
from .. import tls
from .base import Context, Result, Skip, check, passed
from .messaging import archive_has
from .session import CheckFailed, Refused, Session, body, probe, sender

_PRESENCE = qname(ns.CLIENT, "presence")
_STATUS = qname(f"{MUC}#user", "status")
# An origin other than the upload service's, as a web client served from elsewhere has.
WEB_ORIGIN = "https://webclient.example"
PUSH_APP_SERVER = "push.invalid"


@check("XEP-0045 §6.1", "Multi-User Chat")
async def check_muc(ctx: Context) -> Result:
    """A group chat service among the items of the domain's disco#items."""
    service = await ctx.find_service(MUC)
    if service is None:
        raise CheckFailed(f"no item of {ctx.domain}'s disco#items announces {MUC}")
    return passed(f"service {service}")


async def _enter(session: Session, room: JID, nick: str) -> set[str]:
    """§7.2: enter ``room`` as ``nick``; the status codes of the self-presence (110, 201, ...)."""
    join = element(_PRESENCE, {"to": f"{room}/{nick}"}, children=[element(JOIN)])
    sub(join[0], qname(MUC, "history"), {"maxstanzas": "0"})
    session.send(join)
    own = JID(room.local, room.domain, nick)
    answer = await session.presence(lambda el: sender(el) == own, f"the self-presence from {own}", sent=join)
    if answer.get("type") == "error":
        raise CheckFailed(f"entering {room} was refused", join, answer)
    return {status.get("code", "") for status in answer.iterfind(f"{USER_X}/{_STATUS}")}


@check("XEP-0313 §6.1, XEP-0045 §10.1", "Message Archive Management in groups")
async def check_muc_mam(ctx: Context) -> Result:
    """A new room announces ``urn:xmpp:mam:2``, and a message sent to it is in its archive."""
    service = await ctx.find_service(MUC)
    if service is None:
        raise Skip("there is no group chat service")
    session = await ctx.session(0)
    room = JID(ctx.unique("compliance"), service.domain)
    codes = await _enter(session, room, "compliance")
    try:
        if "201" in codes:
            # §10.1.2: accept the default configuration; the room stays locked until then.
            await session.iq("set", element(OWNER_QUERY, children=[DataForm("submit").to_xml()]), room)
        info = await ctx.disco_info(room)
        if mam.NS not in info.features:
            raise CheckFailed(f"the room does not announce {mam.NS} (§6.1)")
        text = ctx.unique("archived in a group")
        message = probe(room, text, "groupchat")
        session.send(message)
        await session.message(lambda el: body(el) == text and el.get("type") == "groupchat",
                              "the room's copy of the message", sent=message)
        try:
            found = await archive_has(session, text, archive=room)
        except Refused as err:
            raise CheckFailed(f"the room's archive query was refused: {err.reason}", err.sent, err.reply) from None
        if found is None:
            raise CheckFailed("a message sent to the room is not in the last page of its archive")
    finally:
        destroy = element(OWNER_QUERY, children=[element(qname(f"{MUC}#owner", "destroy"))])
        try:
            await session.iq("set", destroy, room)
        except CheckFailed:
            session.send(element(_PRESENCE, {"to": f"{room}/compliance", "type": "unavailable"}))
    return passed(f"room at {service} archives its messages")


@check("XEP-0357 §5, §6", "Push Notifications")
async def check_push(ctx: Context) -> Result:
    """The account announces ``urn:xmpp:push:0`` (§4) and takes a registration and its removal."""
    session = await ctx.session(0)
    info = await ctx.disco_info(session.account)
    if push.NS not in info.features:
        raise CheckFailed(f"the account does not announce {push.NS} (§4)")
    node = ctx.unique("compliance")
    await session.iq("set", push.Enable(PUSH_APP_SERVER, node).to_xml())
    await session.iq("set", push.Disable(PUSH_APP_SERVER, node).to_xml())
    return passed("enabled and disabled")


def _cors_problem(response: aiohttp.ClientResponse, what: str, *, methods: bool = False) -> str | None:
    allowed = response.headers.get("Access-Control-Allow-Origin")
    if allowed not in ("*", WEB_ORIGIN):
        return f"the {what} allows the origin {allowed!r}, not {WEB_ORIGIN}"
    if methods:
        listed = {m.strip().upper() for m in response.headers.get("Access-Control-Allow-Methods", "").split(",")}
        if "PUT" not in listed and "*" not in listed:
            return f"the {what} does not allow PUT (Access-Control-Allow-Methods: {', '.join(sorted(listed)) or 'none'})"
        headers = {h.strip().lower() for h in response.headers.get("Access-Control-Allow-Headers", "").split(",")}
        if "content-type" not in headers and "*" not in headers:
            return f"the {what} does not allow the Content-Type header"
    return None


@check("XEP-0363 §4-§6", "HTTP File Upload")
async def check_upload(ctx: Context) -> Result:
    """A slot from the upload service, the CORS preflight web clients send before the PUT,
    the PUT, and the file read back from the GET URL, each answer allowing another origin."""
    service = await ctx.find_service(upload.NS)
    if service is None:
        raise CheckFailed(f"no item of {ctx.domain}'s disco#items announces {upload.NS}")
    session = await ctx.session(0)
    content = ctx.unique("schnack compliance check upload").encode()
    request = upload.SlotRequest("compliance.txt", len(content), "text/plain").to_xml()
    reply = await session.iq("get", request, service)
    found = reply.find(upload.SLOT)
    if found is None:
        raise CheckFailed("the slot request's result carries no <slot/>", request, reply)
    slot = upload.Slot.from_xml(found)
    try:
        await _upload(slot, content, ctx)
    except aiohttp.ClientError as err:
        raise CheckFailed(f"HTTP failed: {err}") from None
    return passed(f"service {service}: slot, CORS preflight, PUT and GET")


async def _upload(slot: upload.Slot, content: bytes, ctx: Context) -> None:
    """§5, §6 over HTTP, with the headers a browser on another origin sends."""
    context = tls.context(ctx.settings.verify, direct_tls=False)
    timeout = aiohttp.ClientTimeout(total=ctx.settings.timeout)
    headers = {"Content-Type": "text/plain", **dict(slot.headers)}
    async with aiohttp.ClientSession(timeout=timeout) as http:
        wanted = ", ".join(sorted(name.lower() for name in headers))
        async with http.options(slot.put, ssl=context, headers={
            "Origin": WEB_ORIGIN, "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": wanted,
        }) as preflight:
            if preflight.status >= 300:
                raise CheckFailed(f"the CORS preflight (OPTIONS {slot.put}) got HTTP {preflight.status}")
            problem = _cors_problem(preflight, "CORS preflight", methods=True)
            if problem:
                raise CheckFailed(problem)
        async with http.put(slot.put, ssl=context, data=content, headers={"Origin": WEB_ORIGIN, **headers}) as put:
            if put.status not in (200, 201):
                raise CheckFailed(f"PUT {slot.put} got HTTP {put.status}: {(await put.text())[:200]}")
            problem = _cors_problem(put, "PUT response")
            if problem:
                raise CheckFailed(problem)
        async with http.get(slot.get, ssl=context, headers={"Origin": WEB_ORIGIN}) as get:
            if get.status != 200:
                raise CheckFailed(f"GET {slot.get} got HTTP {get.status}")
            if await get.read() != content:
                raise CheckFailed(f"GET {slot.get} returned other bytes than were uploaded")
            problem = _cors_problem(get, "GET response")
            if problem:
                raise CheckFailed(problem)


@check("XEP-0215 §3", "External Service Discovery (TURN)")
async def check_external_services(ctx: Context) -> Result:
    """The domain lists a TURN relay (§3.1) with credentials, given in the list or asked for
    with ``<credentials/>`` when the service is restricted (§3.3), and the relay allocates an
    address with them (RFC 8656 §7.1): a relay whose secret differs from the server's refuses
    every call's media."""
    session = await ctx.session(0)
    request = extdisco.Services().to_xml()
    try:
        reply = await session.iq("get", request, ctx.domain)
    except Refused as err:
        raise CheckFailed(f"{ctx.domain} lists no external services: {err.condition}", err.sent, err.received) from None
    found = reply.find(extdisco.SERVICES)
    if found is None:
        raise CheckFailed("the result carries no <services/>", request, reply)
    relays = [s for s in extdisco.Services.from_xml(found).services if s.type in ("turn", "turns")]
    if not relays:
        raise CheckFailed("no TURN relay (type turn or turns) is listed", request, reply)
    problems = []
    for relay in relays:
        usable = relay if relay.username and relay.password else await _credentials(session, ctx, relay)
        if usable is None:
            problems.append(f"{_name(relay)}: listed without credentials, and asking for them gave none")
            continue
        try:
            relayed = await _allocate(usable, ctx)
        except _RelayProblem as err:
            problems.append(f"{_name(relay)}: {err}")
            continue
        expiry = f", valid until {usable.expires:%Y-%m-%d %H:%M} UTC" if usable.expires is not None else ""
        return passed(f"{_name(relay)} allocated {relayed[0]}:{relayed[1]} with the credentials{expiry}")
    raise CheckFailed("no TURN relay works with the credentials given: " + "; ".join(problems))


async def _credentials(session: Session, ctx: Context, relay: extdisco.Service) -> extdisco.Service | None:
    """§3.3: the credentials of a restricted service."""
    asking = extdisco.Credentials((extdisco.Service(relay.type, relay.host, relay.port),)).to_xml()
    try:
        answer = await session.iq("get", asking, ctx.domain)
    except Refused:
        return None
    granted = answer.find(extdisco.CREDENTIALS)
    given = extdisco.Credentials.from_xml(granted).services if granted is not None else ()
    return next((s for s in given if s.username and s.password), None)


class _RelayProblem(Exception):
    """Why a TURN relay did not allocate."""


def _name(relay: extdisco.Service) -> str:
    return f"{relay.type}:{relay.host}:{relay.port or ''} ({relay.transport or 'udp'})"


async def _allocate(relay: extdisco.Service, ctx: Context) -> tuple[str, int]:
    """RFC 8656 §7.1: an Allocate with the long-term credentials; the relayed address."""
    secure = relay.type == "turns"
    transport = relay.transport or ("tcp" if secure else "udp")
    port = relay.port or (5349 if secure else 3478)
    context = tls.context(ctx.settings.verify, direct_tls=False) if secure else None
    try:
        async with asyncio.timeout(ctx.settings.timeout):
            turn, _ = await create_turn_endpoint(asyncio.DatagramProtocol, (relay.host, port), relay.username,
                                                 relay.password, ssl=context, transport=transport)
    except stun.TransactionFailed as err:
        code, text = err.response.attributes.get("ERROR-CODE", (0, "no reason"))
        hint = ": its secret differs from the server's" if code == 401 else ""
        raise _RelayProblem(f"the relay refused the credentials ({code} {text}){hint}") from None
    except (TimeoutError, stun.TransactionTimeout):
        raise _RelayProblem(f"the relay did not answer within {ctx.settings.timeout:g} s") from None
    except OSError as err:
        raise _RelayProblem(f"the relay cannot be reached: {err.strerror or err}") from None
    try:
        relayed: tuple[str, int] = turn.get_extra_info("sockname")
        return relayed
    finally:
        turn.close()
