"""JIDs: parsing and PRECIS normalisation (RFC 7622)."""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass, field

import precis_i18n

_USERNAME = precis_i18n.get_profile("UsernameCaseMapped")
_OPAQUE = precis_i18n.get_profile("OpaqueString")
_LOCAL_FORBIDDEN = frozenset("\"&'/:<>@")
_MAX = 1023


class JIDError(ValueError):
    """A string that is not a valid JID; the message says which part and why."""


def _local(s: str) -> str:
    try:
        out: str = _USERNAME.enforce(s)
    except UnicodeError as err:
        raise JIDError(f"invalid localpart {s!r}: {err}") from None
    if _LOCAL_FORBIDDEN.intersection(out):
        raise JIDError(f"localpart {s!r} contains a forbidden character (RFC 7622 §3.3.1)")
    if len(out.encode()) > _MAX:
        raise JIDError("localpart longer than 1023 bytes")
    return out


def _resource(s: str) -> str:
    try:
        out: str = _OPAQUE.enforce(s)
    except UnicodeError as err:
        raise JIDError(f"invalid resourcepart: {err}") from None
    if len(out.encode()) > _MAX:
        raise JIDError("resourcepart longer than 1023 bytes")
    return out


def _domain(s: str) -> str:
    """RFC 7622 §3.2: lower case, NFC, one trailing dot dropped, labels checked."""
    if s.endswith("."):
        s = s[:-1]
    if s.startswith("[") and s.endswith("]"):
        return s.lower()
    out = unicodedata.normalize("NFC", s.lower())
    if not out:
        raise JIDError("empty domainpart")
    if len(out.encode()) > _MAX:
        raise JIDError("domainpart longer than 1023 bytes")
    for label in out.split("."):
        # The octets themselves: the idna codec raises UnicodeError, no JIDError, for a long label.
        if not label or len(label.encode()) > 63:
            raise JIDError(f"invalid domain label in {s!r}")
        if any(c.isspace() or c in "@/\\" or unicodedata.category(c)[0] == "C" for c in label):
            raise JIDError(f"invalid character in domain {s!r}")
    return out


@dataclass(frozen=True, slots=True)
class JID:
    """A normalised JID ``local@domain/resource`` (RFC 7622 §3)."""

    local: str | None
    domain: str
    resource: str | None = None
    # The JID as text, its hash and its bare JID, made once: routing a message writes its
    # addresses, looks them up and asks for their accounts a dozen times each (sessions, archive
    # preferences, blocklists, carbons).
    _text: str = field(init=False, repr=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False)
    _bare: JID | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        text = f"{self.local}@{self.domain}" if self.local is not None else self.domain
        object.__setattr__(self, "_text", text if self.resource is None else f"{text}/{self.resource}")
        object.__setattr__(self, "_hash", hash((self.local, self.domain, self.resource)))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        # Written out, so that it is compiled: the one dataclass makes runs in the interpreter and
        # compares two tuples it builds (2,600 instructions; routing a message compares several).
        if self is other:
            return True
        if not isinstance(other, JID):
            return NotImplemented
        return (self._hash == other._hash and self.local == other.local and self.domain == other.domain
                and self.resource == other.resource)

    def __reduce__(self) -> tuple[type[JID], tuple[str | None, str, str | None]]:
        # Rebuilt from its parts: a string's hash differs from one process to the next.
        return JID, (self.local, self.domain, self.resource)

    @staticmethod
    def parse(s: str) -> JID:
        """Split (RFC 7622 §3.1) and normalise each part; raises JIDError."""
        return _parse(s)

    @property
    def bare(self) -> JID:
        """The JID without its resource."""
        if self.resource is None:
            return self
        bare = self._bare
        if bare is None:
            bare = JID(self.local, self.domain)
            object.__setattr__(self, "_bare", bare)
        return bare

    @property
    def is_bare(self) -> bool:
        """Whether there is no resource."""
        return self.resource is None

    def __str__(self) -> str:
        return self._text


@functools.lru_cache(maxsize=65536)
def _parse(s: str) -> JID:
    head, slash, resource = s.partition("/")
    local, at, domain = head.rpartition("@")
    if slash and not resource:
        raise JIDError("empty resourcepart")
    if at and not local:
        raise JIDError("empty localpart")
    return JID(_local(local) if at else None, _domain(domain), _resource(resource) if slash else None)
