"""Compliance checks of the account's PEP service and what servers convert through it.

PEP with publish-options (XEP-0163, XEP-0060 §7.1.5: what OMEMO needs to make its keys readable
by anyone), avatar conversion (XEP-0398) and bookmarks conversion (XEP-0411, XEP-0402 §5).
Each check takes out what it put in; a vCard it changed gets its earlier content back.
"""

from __future__ import annotations

import base64
import contextlib
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.jid import JID
from ...xmpp.payloads import avatar, bookmarks
from ...xmpp.payloads.dataforms import DataForm, Field
from ...xmpp.payloads.pubsub import ERRORS, PUBLISH_OPTIONS, PUBSUB, Delete, Item, Items, Publish, Retract
from ...xmpp.xml import element, qname
from .base import Context, Result, check, passed
from .session import CheckFailed, Refused, Session

COMPLIANCE_NS = "https://schnack.im/protocol/compliance"
AVATAR_CONVERSION = "urn:xmpp:pep-vcard-conversion:0"
_VCARD = qname(ns.VCARD, "vCard")
_PRIVATE = qname(ns.PRIVATE, "query")
# A 1x1 PNG: the smallest real image, so that a server that looks at the picture accepts it.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def publish_options(**values: str) -> DataForm:
    """XEP-0060 §7.1.5: the submitted publish-options form (keys without the pubsub# prefix)."""
    fields = [Field("FORM_TYPE", "hidden", values=(PUBLISH_OPTIONS,))]
    fields += [Field(f"pubsub#{key}", values=(value,)) for key, value in values.items()]
    return DataForm("submit", tuple(fields))


async def _publish(session: Session, node: str, item_id: str, payload: Element, options: DataForm | None = None
                   ) -> None:
    await session.iq("set", Publish(node, (Item(item_id, payload),), options).to_xml())


@check("XEP-0163 §4, XEP-0060 §7.1.5", "Personal Eventing Protocol with publish-options")
async def check_pep(ctx: Context) -> Result:
    """The account is a PEP service announcing publish-options; a node published with
    ``access_model=open`` is readable by the other account, which is no contact; a publish
    whose precondition the node does not meet is refused with precondition-not-met."""
    session, other = await ctx.session(0), await ctx.session(1)
    info = await ctx.disco_info(session.account)
    if not any(i.category == "pubsub" and i.type == "pep" for i in info.identities):
        raise CheckFailed("the account has no pubsub/pep identity (XEP-0163 §4)")
    if PUBLISH_OPTIONS not in info.features:
        raise CheckFailed(f"the account does not announce {PUBLISH_OPTIONS}")
    node = ctx.unique(f"{COMPLIANCE_NS}/pep")
    payload = element(qname(COMPLIANCE_NS, "check"), text=node)
    await _publish(session, node, "current", payload, publish_options(access_model="open"))
    try:
        request = Items(node).to_xml()
        reply = await other.iq("get", request, session.account)
        items = reply.find(f"{qname(PUBSUB, 'pubsub')}/{qname(PUBSUB, 'items')}")
        texts = [i.findtext(qname(COMPLIANCE_NS, "check")) for i in items] if items is not None else []
        if node not in texts:
            raise CheckFailed("the node published with access_model=open is not readable by another account",
                              request, reply)
        try:
            await _publish(session, node, "current", payload, publish_options(access_model="whitelist"))
        except Refused as err:
            error = err.reply.find(qname(ns.CLIENT, "error"))
            if err.condition == "conflict" and error is not None and error.find(qname(ERRORS, "precondition-not-met")) is not None:
                return passed("open node readable by others; unmet precondition refused")
            raise CheckFailed(f"a publish with an unmet precondition got {err.condition}, not conflict with "
                              "<precondition-not-met/>", err.sent, err.reply) from None
        raise CheckFailed("a publish whose precondition (access_model=whitelist) the open node does not meet "
                          "was accepted")
    finally:
        with contextlib.suppress(CheckFailed):
            await session.iq("set", Delete(node).to_xml())


@check("XEP-0398 §3.1", "User Avatar to vCard-Based Avatars Conversion")
async def check_avatar_conversion(ctx: Context) -> Result:
    """The account announces the conversion (§2), and an avatar published to PEP (XEP-0084)
    for anyone to see (access model open) is what the other account finds in the account's
    vCard. An avatar for contacts only would not be converted: anyone reads the vCard."""
    session, other = await ctx.session(0), await ctx.session(1)
    info = await ctx.disco_info(session.account)
    if AVATAR_CONVERSION not in info.features:
        raise CheckFailed(f"the account does not announce {AVATAR_CONVERSION} (§2)")
    try:
        before = (await session.iq("get", element(_VCARD))).find(_VCARD)
    except Refused:
        before = None
    data = avatar.AvatarData(PIXEL)
    try:
        public = publish_options(access_model="open")
        await _publish(session, avatar.DATA_NODE, data.id, data.to_xml(), public)
        metadata = avatar.AvatarMetadata((avatar.Info(data.id, len(PIXEL), "image/png", 1, 1),))
        await _publish(session, avatar.METADATA_NODE, data.id, metadata.to_xml(), public)
        request = element(_VCARD)
        reply = await other.iq("get", request, session.account)
        binval = reply.findtext(f"{_VCARD}/{qname(ns.VCARD, 'PHOTO')}/{qname(ns.VCARD, 'BINVAL')}")
        try:
            photo = base64.b64decode("".join((binval or "").split()), validate=True)
        except ValueError:
            photo = b""
        if photo != PIXEL:
            raise CheckFailed("the avatar published to PEP is not the PHOTO of the account's vCard", request, reply)
    finally:
        with contextlib.suppress(CheckFailed):
            # Setting the vCard back converts to PEP again: the earlier avatar, or none.
            await session.iq("set", before if before is not None else element(_VCARD))
            await session.iq("set", Retract(avatar.DATA_NODE, (data.id,)).to_xml())
    return passed("PEP avatar became the vCard photo")


@check("XEP-0411 §4, XEP-0402 §5", "Bookmarks Conversion")
async def check_bookmarks_conversion(ctx: Context) -> Result:
    """The account announces the conversion, and a room bookmarked the XEP-0402 way is listed
    in the account's private XML storage, where XEP-0048 clients look (XEP-0049)."""
    session = await ctx.session(0)
    info = await ctx.disco_info(session.account)
    if bookmarks.CONVERSION not in info.features:
        raise CheckFailed(f"the account does not announce {bookmarks.CONVERSION}")
    room = JID.parse(f"{ctx.unique('compliance')}@{ctx.domain}")
    conference = bookmarks.Conference(room, name="schnack compliance check", autojoin=False)
    options = publish_options(persist_items="true", max_items="max", send_last_published_item="never",
                              access_model="whitelist")
    await _publish(session, bookmarks.NS, str(room), conference.to_native(), options)
    try:
        request = element(_PRIVATE, children=[element(bookmarks.STORAGE)])
        reply = await session.iq("get", request)
        storage = reply.find(f"{_PRIVATE}/{bookmarks.STORAGE}")
        rooms = {c.jid for c in bookmarks.Storage.from_xml(storage).conferences} if storage is not None else set()
        if room not in rooms:
            raise CheckFailed("a native bookmark (XEP-0402) is missing from the private XML storage", request, reply)
    finally:
        with contextlib.suppress(CheckFailed):
            await session.iq("set", Retract(bookmarks.NS, (str(room),), notify=True).to_xml())
    return passed("native bookmark listed in private XML storage")
