"""Stream errors (RFC 6120 §4.9) and stanza errors (RFC 6120 §8.3) as exceptions and elements."""

from __future__ import annotations

from xml.etree.ElementTree import Element

from . import ns
from .xml import element, qname, sub

STREAM_CONDITIONS = frozenset(
    {
        "bad-format", "bad-namespace-prefix", "conflict", "connection-timeout", "host-gone",
        "host-unknown", "improper-addressing", "internal-server-error", "invalid-from",
        "invalid-namespace", "invalid-xml", "not-authorized", "not-well-formed", "policy-violation",
        "remote-connection-failed", "reset", "resource-constraint", "restricted-xml", "see-other-host",
        "system-shutdown", "undefined-condition", "unsupported-encoding", "unsupported-feature",
        "unsupported-stanza-type", "unsupported-version",
    }
)  # fmt: skip

# RFC 6120 §8.3.3: each defined condition with the error type it is usually sent with.
STANZA_CONDITIONS: dict[str, str] = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "gone": "cancel",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "redirect": "modify",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "subscription-required": "auth",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}


class StreamError(Exception):
    """A condition that closes the stream (RFC 6120 §4.9)."""

    def __init__(self, condition: str, text: str | None = None) -> None:
        if condition not in STREAM_CONDITIONS:
            raise ValueError(f"unknown stream error condition {condition!r}")
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text

    def to_xml(self) -> Element:
        """The ``<stream:error/>`` element (RFC 6120 §4.9.2)."""
        el = element(qname(ns.STREAMS, "error"))
        sub(el, qname(ns.STREAM_ERRORS, self.condition))
        if self.text:
            sub(el, qname(ns.STREAM_ERRORS, "text"), {qname(ns.XML, "lang"): "en"}, self.text)
        return el


class StanzaError(Exception):
    """A condition returned to the sender of a stanza (RFC 6120 §8.3)."""

    def __init__(
        self,
        condition: str,
        text: str | None = None,
        *,
        type: str | None = None,
        by: str | None = None,
        extra: Element | None = None,
        legacy_code: str | None = None,
    ) -> None:
        if condition not in STANZA_CONDITIONS:
            raise ValueError(f"unknown stanza error condition {condition!r}")
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text
        self.type = type or STANZA_CONDITIONS[condition]
        self.by = by
        self.extra = extra
        # Some clients still read the XEP-0086 numeric code (e.g. libstrophe's PEP handling).
        self.legacy_code = legacy_code

    def to_xml(self, stanza_ns: str = ns.CLIENT) -> Element:
        """The ``<error/>`` child of an error stanza (RFC 6120 §8.3.2)."""
        el = element(
            qname(stanza_ns, "error"), {"type": self.type, "by": self.by, "code": self.legacy_code}
        )
        sub(el, qname(ns.STANZA_ERRORS, self.condition))
        if self.text:
            sub(el, qname(ns.STANZA_ERRORS, "text"), {qname(ns.XML, "lang"): "en"}, self.text)
        if self.extra is not None:
            el.append(self.extra)
        return el

    @classmethod
    def from_xml(cls, error: Element) -> StanzaError:
        """Read an ``<error/>`` element; unknown conditions become undefined-condition."""
        condition = "undefined-condition"
        text = None
        for child in error:
            if child.tag.startswith("{" + ns.STANZA_ERRORS + "}"):
                local = child.tag.rpartition("}")[2]
                if local == "text":
                    text = child.text
                elif local in STANZA_CONDITIONS:
                    condition = local
        return cls(condition, text, type=error.get("type"))
