"""XEP-0004: Data Forms (the ``jabber:x:data`` form, its fields and options).

Only the single-item shapes are modelled (form, submit, cancel, and result without
``<reported/>``/``<item/>`` tables); that is what registration, disco extension forms (XEP-0128)
and entity capabilities (XEP-0115 §5.4) use.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from .. import ns
from ..xml import element, qname, sub

FORM_TYPES = frozenset({"form", "submit", "cancel", "result"})
FIELD_TYPES = frozenset(
    {
        "boolean", "fixed", "hidden", "jid-multi", "jid-single", "list-multi", "list-single",
        "text-multi", "text-private", "text-single",
    }
)  # fmt: skip

_X = qname(ns.DATA_FORMS, "x")
_TITLE = qname(ns.DATA_FORMS, "title")
_INSTRUCTIONS = qname(ns.DATA_FORMS, "instructions")
_FIELD = qname(ns.DATA_FORMS, "field")
_VALUE = qname(ns.DATA_FORMS, "value")
_OPTION = qname(ns.DATA_FORMS, "option")
_REQUIRED = qname(ns.DATA_FORMS, "required")
_DESC = qname(ns.DATA_FORMS, "desc")


class DataFormError(ValueError):
    """A ``jabber:x:data`` element that breaks XEP-0004 §3."""


@dataclass(frozen=True)
class Option:
    """One choice of a list field (XEP-0004 §3.2)."""

    value: str
    label: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Option:
        return cls(el.findtext(_VALUE) or "", el.get("label"))

    def to_xml(self) -> Element:
        option = element(_OPTION, {"label": self.label})
        sub(option, _VALUE, text=self.value)
        return option


@dataclass(frozen=True)
class Field:
    """A form field (XEP-0004 §3.2); ``values`` keeps the order the sender used."""

    var: str | None
    type: str | None = None
    label: str | None = None
    values: tuple[str, ...] = ()
    required: bool = False
    desc: str | None = None
    options: tuple[Option, ...] = ()

    @property
    def value(self) -> str | None:
        """The first value, for single-valued fields."""
        return self.values[0] if self.values else None

    @classmethod
    def from_xml(cls, el: Element) -> Field:
        kind = el.get("type")
        if kind is not None and kind not in FIELD_TYPES:
            raise DataFormError(f"unknown field type {kind!r}")
        return cls(
            var=el.get("var"),
            type=kind,
            label=el.get("label"),
            values=tuple(v.text or "" for v in el.findall(_VALUE)),
            required=el.find(_REQUIRED) is not None,
            desc=el.findtext(_DESC),
            options=tuple(Option.from_xml(o) for o in el.findall(_OPTION)),
        )

    def to_xml(self) -> Element:
        field = element(_FIELD, {"var": self.var, "type": self.type, "label": self.label})
        if self.desc is not None:
            sub(field, _DESC, text=self.desc)
        if self.required:
            sub(field, _REQUIRED)
        for value in self.values:
            sub(field, _VALUE, text=value)
        field.extend(option.to_xml() for option in self.options)
        return field


@dataclass(frozen=True)
class DataForm:
    """A data form (XEP-0004 §3.1)."""

    type: str
    fields: tuple[Field, ...] = ()
    title: str | None = None
    instructions: tuple[str, ...] = ()

    @property
    def form_type(self) -> str | None:
        """The value of the hidden FORM_TYPE field (XEP-0068 §3), if any."""
        field = self.field("FORM_TYPE")
        return field.value if field is not None and field.type in ("hidden", None) else None

    def field(self, var: str) -> Field | None:
        """The field named ``var``."""
        return next((f for f in self.fields if f.var == var), None)

    def value(self, var: str) -> str | None:
        """The first value of field ``var``."""
        field = self.field(var)
        return field.value if field is not None else None

    @classmethod
    def from_xml(cls, el: Element) -> DataForm:
        if el.tag != _X:
            raise DataFormError(f"expected a jabber:x:data form, got {el.tag}")
        kind = el.get("type", "")
        if kind not in FORM_TYPES:
            raise DataFormError(f"unknown form type {kind!r}")
        return cls(
            type=kind,
            fields=tuple(Field.from_xml(f) for f in el.findall(_FIELD)),
            title=el.findtext(_TITLE),
            instructions=tuple(i.text or "" for i in el.findall(_INSTRUCTIONS)),
        )

    def to_xml(self) -> Element:
        form = element(_X, {"type": self.type})
        if self.title is not None:
            sub(form, _TITLE, text=self.title)
        for line in self.instructions:
            sub(form, _INSTRUCTIONS, text=line)
        form.extend(field.to_xml() for field in self.fields)
        return form
