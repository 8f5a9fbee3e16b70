"""Verified calls: the DTLS fingerprint OMEMO-encrypted for one device, as Conversations and Dino do.

DTLS-SRTP (RFC 5763) only proves that the peer holds the certificate named by the fingerprint in
its description; whoever relays the description (the servers) could replace both. Conversations'
scheme (namespace ``http://gultsch.de/xmpp/drafts/omemo/dlts-srtp-verification``) closes that:

1. the callee's ``<proceed/>`` names its OMEMO device (XEP-0353 ``<device id=.../>``);
2. the caller puts each transport's fingerprint, OMEMO-encrypted (legacy OMEMO, XEP-0384 v0.3)
   for that one device, into a ``<fingerprint/>`` of the namespace above instead of XEP-0320's;
3. the callee opens it, and answers with its own fingerprint encrypted for the caller's device
   that sent it.

A fingerprint that arrived that way was written by the OMEMO device that encrypted it; the call
counts as **verified** when the user has verified that device's key (:attr:`Trust.VERIFIED`),
**unverified** otherwise (a blindly trusted key, or a plain XEP-0320 fingerprint from a peer
without OMEMO). A certificate that does not match the fingerprint still fails DTLS.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ...xmpp.jid import JID
from ...xmpp.parser import parse_frame
from ...xmpp.payloads.jingle_ice import EncryptedFingerprint, Fingerprint
from ...xmpp.xml import serialize
from ..errors import ClientError
from ..omemo import Device, Trust
from .sdp import RtpContents

if TYPE_CHECKING:
    from ..omemo import Omemo


class VerificationFailed(RuntimeError):
    """An encrypted fingerprint that cannot be opened, or that another device than agreed wrote."""


@dataclass(frozen=True)
class Verification:
    """Who vouched for the peer's DTLS fingerprint: the OMEMO device that encrypted it, or nobody."""

    device: Device | None = None

    @property
    def verified(self) -> bool:
        return self.device is not None and self.device.trust is Trust.VERIFIED

    @property
    def state(self) -> str:
        return "verified" if self.verified else "unverified"

    def describe(self) -> str:
        """One line for the call's status: verified or not, and why."""
        if self.device is None:
            return "unverified: the peer's DTLS fingerprint came without OMEMO"
        who = f"OMEMO {self.device.describe()}"
        if self.verified:
            return f"verified: the DTLS fingerprint came encrypted by {who}, whose key you verified"
        return f"unverified: the DTLS fingerprint came encrypted by {who}, whose key you have not verified"


def is_sealed(contents: RtpContents) -> bool:
    """Whether any transport carries an OMEMO-encrypted fingerprint."""
    return any(c.transport is not None and c.transport.encrypted_fingerprints for c in contents.contents)


async def seal(contents: RtpContents, omemo: Omemo, peer: JID, device: int) -> RtpContents:
    """Our description with each XEP-0320 fingerprint replaced by the same one OMEMO-encrypted
    for ``device`` of ``peer``; raises what :meth:`Omemo.encrypt_for_device` raises."""
    out = []
    for content in contents.contents:
        transport = content.transport
        if transport is None or not transport.fingerprints:
            out.append(content)
            continue
        sealed = []
        for fingerprint in transport.fingerprints:
            encrypted = await omemo.encrypt_for_device(peer, device, fingerprint.value.encode())
            sealed.append(EncryptedFingerprint(fingerprint.hash, serialize(encrypted), fingerprint.setup))
        transport = replace(transport, fingerprints=(), encrypted_fingerprints=tuple(sealed))
        out.append(replace(content, transport=transport))
    return RtpContents(tuple(out), contents.groups)


async def open_sealed(contents: RtpContents, omemo: Omemo, peer: JID,
                      expected: int | None = None) -> tuple[RtpContents, Device]:
    """The peer's description with its encrypted fingerprints opened, and the device that
    encrypted them (every one by the same device; by ``expected`` when given)."""
    out = []
    device: Device | None = None
    for content in contents.contents:
        transport = content.transport
        if transport is None or not transport.encrypted_fingerprints:
            out.append(content)
            continue
        opened = []
        for sealed in transport.encrypted_fingerprints:
            encrypted = parse_frame(sealed.encrypted.encode(), len(sealed.encrypted.encode()) + 1)
            try:
                plaintext, sender = await omemo.open_payload(peer, encrypted)
            except ClientError as err:
                raise VerificationFailed(f"the encrypted DTLS fingerprint cannot be opened: {err}") from err
            if device is not None and sender.id != device.id:
                raise VerificationFailed("the DTLS fingerprints were encrypted by different devices")
            device = sender
            value = plaintext.decode("ascii", errors="replace").strip().upper()
            opened.append(Fingerprint(sealed.hash, value, sealed.setup))
        out.append(replace(content, transport=replace(transport, fingerprints=(*opened, *transport.fingerprints),
                                                      encrypted_fingerprints=())))  # fmt: skip
    if device is None:
        raise VerificationFailed("no encrypted DTLS fingerprint")
    if expected is not None and device.id != expected:
        raise VerificationFailed(f"the DTLS fingerprint was encrypted by device {device.id}, not {expected}")
    return RtpContents(tuple(out), contents.groups), device
