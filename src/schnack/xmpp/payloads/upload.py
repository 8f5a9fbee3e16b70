"""XEP-0363: HTTP File Upload (v1.1, ``urn:xmpp:http:upload:0``): slot requests, slots and errors.

A client asks the upload service for a slot with ``<request filename size content-type/>``
(§4); the service answers with ``<slot/>`` holding the PUT URL (with the only headers a
client may pass on: Authorization, Cookie, Expires) and the GET URL. §5 adds two
application errors: ``<file-too-large/>`` naming the largest size accepted, and ``<retry/>``
saying when a quota allows another upload. The service's disco#info carries the
``max-file-size`` in a form (§3).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from xml.etree.ElementTree import Element

from ..xml import element, qname, sub
from .dataforms import DataForm, Field

NS = "urn:xmpp:http:upload:0"
REQUEST = qname(NS, "request")
SLOT = qname(NS, "slot")
FILE_TOO_LARGE = qname(NS, "file-too-large")
RETRY = qname(NS, "retry")
_PUT = qname(NS, "put")
_GET = qname(NS, "get")
_HEADER = qname(NS, "header")
_MAX_FILE_SIZE = qname(NS, "max-file-size")
# §4: a client strips every other header the service names.
PUT_HEADERS = frozenset({"authorization", "cookie", "expires"})
# Unicode bidirectional classes of the embeddings, overrides and isolates (UAX #9 §2).
_BIDI_CONTROLS = frozenset({"LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"})


class UploadError(ValueError):
    """A payload that breaks XEP-0363; ``condition`` is the stanza error it deserves."""

    def __init__(self, text: str, condition: str = "bad-request") -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


def misleading(c: str) -> bool:
    """Whether a character of a file name hides what the name is: a control character, a line
    or paragraph separator, or one that reorders how the name is shown (UAX #9 §2: it makes
    ``gpj.exe`` look like ``exe.jpg``). Zero-width joiners belong to Persian and Indic words and
    to emoji sequences, and are none of these."""
    return unicodedata.category(c) in ("Cc", "Zl", "Zp") or unicodedata.bidirectional(c) in _BIDI_CONTROLS


def _size(text: str | None, what: str) -> int:
    if text is None or not text.isascii() or not text.isdigit():
        raise UploadError(f"{what} must be a whole number of bytes, got {text!r}")
    return int(text)


@dataclass(frozen=True)
class SlotRequest:
    """§4: a request for an upload slot."""

    filename: str
    size: int
    content_type: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> SlotRequest:
        if el.tag != REQUEST:
            raise UploadError(f"expected {REQUEST}, got {el.tag}")
        filename = el.get("filename")
        if not filename:
            raise UploadError("the request needs a 'filename'")
        return cls(filename, _size(el.get("size"), "'size'"), el.get("content-type") or None)

    def to_xml(self) -> Element:
        return element(
            REQUEST, {"filename": self.filename, "size": str(self.size), "content-type": self.content_type}
        )


@dataclass(frozen=True)
class Slot:
    """§4: where to PUT the file (with these headers) and where it will be found."""

    put: str
    get: str
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_xml(cls, el: Element) -> Slot:
        if el.tag != SLOT:
            raise UploadError(f"expected {SLOT}, got {el.tag}")
        put, get = el.find(_PUT), el.find(_GET)
        if put is None or get is None or not put.get("url") or not get.get("url"):
            raise UploadError("a slot needs <put url=''/> and <get url=''/>")
        headers = []
        for header in put.findall(_HEADER):
            name = header.get("name")
            # §4: only the three allowed headers are kept, and no value may break a header line.
            if name and name.lower() in PUT_HEADERS and not any(c in (header.text or "") for c in "\r\n"):
                headers.append((name, header.text or ""))
        return cls(put.get("url", ""), get.get("url", ""), tuple(headers))

    def to_xml(self) -> Element:
        slot = element(SLOT)
        put = sub(slot, _PUT, {"url": self.put})
        for name, value in self.headers:
            sub(put, _HEADER, {"name": name}, value)
        sub(slot, _GET, {"url": self.get})
        return slot


@dataclass(frozen=True)
class FileTooLarge:
    """§5: the application condition of a not-acceptable error for a file over the limit."""

    max_file_size: int

    @classmethod
    def from_xml(cls, el: Element) -> FileTooLarge:
        if el.tag != FILE_TOO_LARGE:
            raise UploadError(f"expected {FILE_TOO_LARGE}, got {el.tag}")
        return cls(_size(el.findtext(_MAX_FILE_SIZE), "max-file-size"))

    def to_xml(self) -> Element:
        el = element(FILE_TOO_LARGE)
        sub(el, _MAX_FILE_SIZE, text=str(self.max_file_size))
        return el


@dataclass(frozen=True)
class Retry:
    """§5: when a client over its quota may try again."""

    stamp: datetime

    @classmethod
    def from_xml(cls, el: Element) -> Retry:
        if el.tag != RETRY:
            raise UploadError(f"expected {RETRY}, got {el.tag}")
        try:
            stamp = datetime.fromisoformat((el.get("stamp") or "").replace("Z", "+00:00"))
        except ValueError:
            raise UploadError(f"'stamp' is not a date and time: {el.get('stamp')!r}") from None
        if stamp.tzinfo is None:
            raise UploadError("'stamp' needs a time zone (XEP-0082)")
        return cls(stamp.astimezone(UTC))

    def to_xml(self) -> Element:
        text = self.stamp.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return element(RETRY, {"stamp": text})


def service_form(max_file_size: int | None) -> DataForm:
    """§3: the form a service adds to its disco#info (no ``max-file-size`` when there is no limit)."""
    fields = [Field("FORM_TYPE", "hidden", values=(NS,))]
    if max_file_size is not None:
        fields.append(Field("max-file-size", values=(str(max_file_size),)))
    return DataForm("result", tuple(fields))


def max_file_size(form: DataForm) -> int | None:
    """The limit a service's disco#info form announces (None: no limit, or not an upload form)."""
    if form.form_type != NS:
        return None
    value = form.value("max-file-size")
    return _size(value, "max-file-size") if value is not None else None
