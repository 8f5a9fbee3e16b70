"""XEP-0420 Stanza Content Encryption envelopes, as OMEMO 2 (XEP-0384) uses them.

What OMEMO 2 encrypts is not a body but an envelope: the message's content elements, random
padding (``<rpad/>``, so that the ciphertext's length does not give away the text's), the
sender's bare JID (``<from/>``) and the conversation's (``<to/>``: the recipient, or the group's
room, which XEP-0384's SCE profile requires in group messages). The recipient checks each
against the stanza when it is there: a server that moves an encrypted payload into a stanza
from someone else, or turns a group message into a private one or back, is caught.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from ...xmpp.errors import StreamError
from ...xmpp.jid import JID, JIDError
from ...xmpp.parser import parse_frame
from ...xmpp.xml import element, qname, serialize, sub

SCE = "urn:xmpp:sce:1"
_ENVELOPE = qname(SCE, "envelope")
_CONTENT = qname(SCE, "content")
_RPAD = qname(SCE, "rpad")
_FROM = qname(SCE, "from")
_TO = qname(SCE, "to")
# Padding of 0 to 200 characters.
MAX_PADDING = 200
# An envelope is at most a stanza's worth of XML.
MAX_ENVELOPE_BYTES = 256 * 1024


class SceError(ValueError):
    """A decrypted payload that is not a valid envelope, or not from whom the stanza says."""


@dataclass(frozen=True)
class Opened:
    """The content elements of an envelope."""

    content: tuple[Element, ...]


def seal(content: Sequence[Element], sender: JID, to: JID) -> bytes:
    """The envelope holding ``content`` from ``sender`` in the conversation with ``to`` (a
    contact, or a group's room), serialized, ready to be encrypted."""
    envelope = element(_ENVELOPE)
    sub(envelope, _CONTENT).extend(content)
    padding = secrets.token_urlsafe(MAX_PADDING)[:secrets.randbelow(MAX_PADDING + 1)]
    sub(envelope, _RPAD, text=padding)
    sub(envelope, _FROM, {"jid": str(sender.bare)})
    sub(envelope, _TO, {"jid": str(to.bare)})
    return serialize(envelope).encode()


def open_envelope(data: bytes, sender: JID, to: JID) -> Opened:
    """The content of a decrypted envelope that ``sender`` sent in the conversation with ``to``
    (ourselves or the contact we wrote to; a group's room); SceError if it is not one."""
    try:
        envelope = parse_frame(data, MAX_ENVELOPE_BYTES)
    except StreamError as err:
        raise SceError(f"the decrypted envelope is not XML: {err}") from None
    if envelope.tag != _ENVELOPE:
        raise SceError(f"expected an SCE envelope, got {envelope.tag}")
    content = envelope.find(_CONTENT)
    if content is None:
        raise SceError("the envelope has no content")
    # An envelope without <from/> or <to/> is read: some clients leave them out of one-to-one chats.
    from_jid = _affix(envelope, _FROM, "sender")
    if from_jid is not None and from_jid.bare != sender.bare:
        raise SceError(f"the envelope says it is from {from_jid}, the message from {sender.bare}")
    to_jid = _affix(envelope, _TO, "conversation")
    if to_jid is not None and to_jid.bare != to.bare:
        raise SceError(f"the envelope says it is for {to_jid}, the message came for {to.bare}")
    return Opened(tuple(content))


def _affix(envelope: Element, tag: str, what: str) -> JID | None:
    """The JID an affix element names, if it is there."""
    found = envelope.find(tag)
    if found is None:
        return None
    try:
        return JID.parse(found.get("jid", ""))
    except JIDError:
        raise SceError(f"the envelope names an invalid {what}") from None
