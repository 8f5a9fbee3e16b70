"""Compliance checks of one-to-one messaging between the two accounts.

Message carbons (XEP-0280), the blocking command (XEP-0191), offline storage (XEP-0160) and the
account's archive (XEP-0313). Each sends messages with a body no earlier run used and waits for
exactly those, so an account's old messages cannot make a check pass.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.jid import JID
from ...xmpp.payloads import blocking, carbons, mam
from ...xmpp.payloads.dataforms import DataForm, Field
from ...xmpp.payloads.rsm import ResultSet
from ...xmpp.xml import element, qname
from .base import Context, Result, check, passed
from .session import CheckFailed, Refused, Session, body, carried_body, probe, sender

_ERROR = qname(ns.CLIENT, "error")
_DELAY = qname(ns.DELAY, "delay")


@check("XEP-0280 §4-§6", "Message Carbons")
async def check_carbons(ctx: Context) -> Result:
    """With carbons enabled on two sessions of the first account, a message one sends and one
    sent to the other's full JID are copied to the second (§6.1 received, §6.2 sent)."""
    info = await ctx.disco_info(ctx.domain)
    if carbons.NS not in info.features:
        raise CheckFailed(f"the domain does not announce {carbons.NS} (§3)")
    first, other = await ctx.session(0), await ctx.session(1)
    async with ctx.extra(0) as second:
        for session in (first, second):
            await session.iq("set", carbons.Toggle(enable=True).to_xml())
        try:
            text = ctx.unique("carbon of a sent message")
            sent = probe(other.account, text)
            first.send(sent)
            await second.message(lambda el: carried_body(el, carbons.SENT) == text and sender(el) == first.account,
                                 "the <sent/> carbon on the account's other session", sent=sent)
            text = ctx.unique("carbon of a received message")
            received = probe(first.jid, text)
            other.send(received)
            await second.message(lambda el: carried_body(el, carbons.RECEIVED) == text,
                                 "the <received/> carbon of a message to the account's other session", sent=received)
        finally:
            await first.iq("set", carbons.Toggle(enable=False).to_xml())
    return passed("sent and received messages copied")


@check("XEP-0191 §3", "Blocking Command")
async def check_blocking(ctx: Context) -> Result:
    """Blocking the second account (§3.3): the blocklist holds it (§3.2) and a message to it
    bounces with ``<blocked/>`` (§3.5, "not-acceptable"); unblocking (§3.4) takes it out."""
    info = await ctx.disco_info(ctx.domain)
    if blocking.NS not in info.features:
        raise CheckFailed(f"the domain does not announce {blocking.NS} (§2)")
    session, other = await ctx.session(0), await ctx.session(1)
    await session.iq("get", blocking.Blocklist().to_xml())
    await session.iq("set", blocking.Block((other.account,)).to_xml())
    try:
        listed = await _blocklist(session)
        if other.account not in listed:
            raise CheckFailed(f"after blocking {other.account} the blocklist does not list it")
        text = ctx.unique("to a blocked contact")
        message = probe(other.account, text)
        session.send(message)
        bounce = await session.message(
            lambda el: el.get("type") == "error" and el.get("id") == message.get("id"),
            "the error for a message to a blocked contact", sent=message)
        error = bounce.find(_ERROR)
        if error is None or error.find(blocking.BLOCKED) is None:
            raise CheckFailed("the bounce of a message to a blocked contact lacks <blocked/> (§3.5)", message, bounce)
    finally:
        await session.iq("set", blocking.Unblock((other.account,)).to_xml())
    if other.account in await _blocklist(session):
        raise CheckFailed(f"after unblocking {other.account} the blocklist still lists it")
    return passed("block, bounce with <blocked/>, unblock")


async def _blocklist(session: Session) -> tuple[JID, ...]:
    reply = await session.iq("get", blocking.Blocklist().to_xml())
    found = reply.find(blocking.BLOCKLIST)
    if found is None:
        raise CheckFailed("the blocklist result carries no <blocklist/>", received=reply)
    return blocking.Blocklist.from_xml(found).items


@check("XEP-0160 §3", "Offline Messages")
async def check_offline(ctx: Context) -> Result:
    """A message to the second account while it is offline arrives when it logs in and sends
    its initial presence, with the time it was stored (XEP-0203)."""
    await ctx.drop(1)
    first = await ctx.session(0)
    text = ctx.unique("stored while offline")
    message = probe(ctx.account(1).jid, text)
    first.send(message)
    # A ping behind it: once answered, the server has handled (and stored) the message.
    await first.iq("get", element(qname(ns.PING, "ping")))
    second = await ctx.session(1)
    arrived = await second.message(lambda el: body(el) == text, "the message sent while offline", sent=message)
    stamped = " with its delay stamp" if arrived.find(_DELAY) is not None else " (without a delay stamp)"
    return passed(f"delivered at login{stamped}")


def _filter(with_jid: JID) -> Element:
    return DataForm("submit", (
        Field("FORM_TYPE", "hidden", values=(mam.NS,)),
        Field("with", values=(str(with_jid),)),
    )).to_xml()  # fmt: skip


async def archive_has(session: Session, text: str, *, archive: JID | None = None,
                      with_jid: JID | None = None) -> Element | None:
    """The latest page of an archive (the account's own, or ``archive``: a room) searched for a
    message with body ``text`` (XEP-0313 §4, RSM ``<before/>`` for the last page); the result
    that holds it, or None."""
    queryid = Context.unique("query")
    query = element(mam.QUERY, {"queryid": queryid})
    if with_jid is not None:
        query.append(_filter(with_jid))
    query.append(ResultSet(max=50, before="").to_xml())
    reply = await session.iq("set", query, archive)
    if reply.find(mam.FIN) is None:
        raise CheckFailed("the archive's result carries no <fin/> (§4.3.2)", query, reply)
    return next((el for el in session.messages
                 if el.find(f"{mam.RESULT}[@queryid='{queryid}']") is not None
                 and carried_body(el, mam.RESULT) == text), None)


@check("XEP-0313 §4", "Message Archive Management")
async def check_mam(ctx: Context) -> Result:
    """The account announces ``urn:xmpp:mam:2`` (§6.1), and a message between the accounts is
    in the recipient's archive (§4)."""
    first, second = await ctx.session(0), await ctx.session(1)
    info = await ctx.disco_info(second.account, which=1)
    if mam.NS not in info.features:
        raise CheckFailed(f"the account does not announce {mam.NS} (§6.1)")
    text = ctx.unique("archived")
    message = probe(second.account, text)
    first.send(message)
    await second.message(lambda el: body(el) == text, "the message to archive", sent=message)
    try:
        found = await archive_has(second, text, with_jid=first.account)
    except Refused as err:
        raise CheckFailed(f"the archive query was refused: {err.reason}", received=err.reply) from None
    if found is None:
        raise CheckFailed("a message delivered to the account is not in the last page of its archive")
    return passed("delivered message found in the archive")
