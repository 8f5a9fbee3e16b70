"""XEP-0115: Entity Capabilities (the ``<c/>`` element and the verification string of §5)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from .. import ns
from ..xml import element, qname
from .disco import DiscoInfo

C = qname(ns.CAPS, "c")

# IANA "Hash Function Textual Names" to hashlib names (XEP-0115 §5.1 step 8).
_HASHES = {
    "sha-1": "sha1",
    "sha-224": "sha224",
    "sha-256": "sha256",
    "sha-384": "sha384",
    "sha-512": "sha512",
}


class CapsError(ValueError):
    """A caps element or disco#info result that XEP-0115 cannot use."""


def verification_string(info: DiscoInfo) -> str:
    """The string S of XEP-0115 §5.1, steps 1 to 7, before hashing.

    Sorting is by code point, which equals the "i;octet" collation of the UTF-8 bytes. Forms
    without a FORM_TYPE are left out, as §5.4 step 3.6 tells a verifier to ignore them.
    """
    parts: list[str] = []
    identities = sorted(info.identities, key=lambda i: (i.category, i.type, i.lang or "", i.name or ""))
    for identity in identities:
        parts.append(f"{identity.category}/{identity.type}/{identity.lang or ''}/{identity.name or ''}<")
    parts.extend(f"{feature}<" for feature in sorted(info.features))
    typed = [(form.form_type, form) for form in info.forms if form.form_type is not None]
    for form_type, form in sorted(typed, key=lambda pair: pair[0] or ""):
        parts.append(f"{form_type}<")
        for field in sorted((f for f in form.fields if f.var != "FORM_TYPE"), key=lambda f: f.var or ""):
            parts.append(f"{field.var or ''}<")
            parts.extend(f"{value}<" for value in sorted(field.values))
    return "".join(parts)


def compute_ver(info: DiscoInfo, hash_name: str = "sha-1") -> str:
    """The 'ver' attribute for ``info`` (XEP-0115 §5.1 step 8): base64 of the hashed S."""
    try:
        algorithm = _HASHES[hash_name]
    except KeyError:
        raise CapsError(f"unsupported hash {hash_name!r}") from None
    digest = hashlib.new(algorithm, verification_string(info).encode()).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True)
class Caps:
    """The ``<c/>`` element in presence or stream features (XEP-0115 §4, §6.3)."""

    node: str
    ver: str
    hash: str = "sha-1"

    @property
    def disco_node(self) -> str:
        """The node a disco#info query for these capabilities names (XEP-0115 §6.2)."""
        return f"{self.node}#{self.ver}"

    @classmethod
    def from_xml(cls, el: Element) -> Caps:
        if el.tag != C:
            raise CapsError(f"expected a caps element, got {el.tag}")
        node, ver, hash_name = el.get("node"), el.get("ver"), el.get("hash")
        if not node or not ver or not hash_name:
            raise CapsError("caps need node, ver and hash (the legacy format is not supported)")
        return cls(node, ver, hash_name)

    def to_xml(self) -> Element:
        return element(C, {"hash": self.hash, "node": self.node, "ver": self.ver})
