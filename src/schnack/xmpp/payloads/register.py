"""XEP-0077: In-Band Registration, the ``jabber:iq:register`` query.

A field is None when absent and '' when present but empty: in a result, an empty
``<username/>`` asks for that field (§3.1); in a set, it is a value the sender left empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from .. import ns
from ..xml import element, qname, sub, text_of
from .dataforms import DataForm

QUERY = qname(ns.REGISTER, "query")
FEATURE = qname(ns.REGISTER_FEATURE, "register")
_INSTRUCTIONS = qname(ns.REGISTER, "instructions")
_USERNAME = qname(ns.REGISTER, "username")
_PASSWORD = qname(ns.REGISTER, "password")
_REGISTERED = qname(ns.REGISTER, "registered")
_REMOVE = qname(ns.REGISTER, "remove")
_X = qname(ns.DATA_FORMS, "x")


class RegisterError(ValueError):
    """A query that is not a ``jabber:iq:register`` query."""


@dataclass(frozen=True)
class RegisterQuery:
    """The query of XEP-0077 §3 (legacy fields) with an optional data form (§4)."""

    instructions: str | None = None
    username: str | None = None
    password: str | None = None
    registered: bool = False
    remove: bool = False
    form: DataForm | None = None

    @classmethod
    def from_xml(cls, el: Element) -> RegisterQuery:
        if el.tag != QUERY:
            raise RegisterError(f"expected a jabber:iq:register query, got {el.tag}")
        x = el.find(_X)
        return cls(
            instructions=el.findtext(_INSTRUCTIONS),
            username=text_of(el, _USERNAME),
            password=text_of(el, _PASSWORD),
            registered=el.find(_REGISTERED) is not None,
            remove=el.find(_REMOVE) is not None,
            form=DataForm.from_xml(x) if x is not None else None,
        )

    def to_xml(self) -> Element:
        query = element(QUERY)
        if self.registered:
            sub(query, _REGISTERED)
        if self.instructions is not None:
            sub(query, _INSTRUCTIONS, text=self.instructions)
        for tag, value in ((_USERNAME, self.username), (_PASSWORD, self.password)):
            if value is not None:
                sub(query, tag, text=value or None)
        if self.remove:
            sub(query, _REMOVE)
        if self.form is not None:
            query.append(self.form.to_xml())
        return query
