"""XEP-0313: Message Archive Management (``urn:xmpp:mam:2``), with XEP-0441 preferences.

The query (§4) with its filter form (§4.1) and RSM ``<set/>`` (§4.3), the results forwarded as
XEP-0297 ``<forwarded/>`` with a XEP-0203 ``<delay/>`` (§4.2), the closing ``<fin/>`` (§4.3), the
archive metadata of ``urn:xmpp:mam:2#extended`` (§5) and the archiving preferences (XEP-0441 §2).
Dates are XEP-0082 DateTimes that name their time zone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from xml.etree.ElementTree import Element

from .. import ns
from ..jid import JID, JIDError
from ..xml import element, qname, sub
from .dataforms import DataForm, DataFormError, Field
from .forward import FORWARDED, Forwarded, ForwardError, format_stamp, parse_stamp
from .rsm import SET, ResultSet, RsmError

NS = "urn:xmpp:mam:2"
EXTENDED = "urn:xmpp:mam:2#extended"
XDATA_VALIDATE = "http://jabber.org/protocol/xdata-validate"

QUERY = qname(NS, "query")
RESULT = qname(NS, "result")
FIN = qname(NS, "fin")
PREFS = qname(NS, "prefs")
METADATA = qname(NS, "metadata")
_FLIP_PAGE = qname(NS, "flip-page")
_ALWAYS = qname(NS, "always")
_NEVER = qname(NS, "never")
_JID = qname(NS, "jid")
_START = qname(NS, "start")
_END = qname(NS, "end")
_X = qname(ns.DATA_FORMS, "x")
_VALIDATE = qname(XDATA_VALIDATE, "validate")
_OPEN = qname(XDATA_VALIDATE, "open")

POLICIES = ("always", "never", "roster")


class MamError(ValueError):
    """A MAM element that breaks XEP-0313; ``condition`` is the stanza error it deserves."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


def _datetime(text: str) -> datetime:
    try:
        return parse_stamp(text.strip())
    except ForwardError as err:
        raise MamError("bad-request", str(err)) from None


# §4.1.5: the fields a server supports, with the types clients may rely on.
_FIELD_TYPES = {
    "with": "jid-single",
    "start": "text-single",
    "end": "text-single",
    "before-id": "text-single",
    "after-id": "text-single",
    "ids": "list-multi",
}


def _single(values: dict[str, tuple[str, ...]], var: str) -> str | None:
    given = values.get(var)
    if not given:
        return None
    if len(given) > 1:
        raise MamError("bad-request", f"the field {var!r} takes one value")
    return given[0].strip()


@dataclass(frozen=True)
class Filter:
    """The fields of the query form (§4.1); ``before_id``, ``after_id`` and ``ids`` are #extended."""

    with_jid: JID | None = None
    start: datetime | None = None
    end: datetime | None = None
    before_id: str | None = None
    after_id: str | None = None
    ids: tuple[str, ...] | None = None

    @classmethod
    def from_form(cls, form: DataForm) -> Filter:
        """Read a submitted form; §4.1.5: a field this protocol does not define is not implemented."""
        if form.type != "submit":
            raise MamError("bad-request", f"the query form must be of type 'submit', not {form.type!r}")
        if form.form_type not in (None, NS):
            raise MamError("bad-request", f"the query form must have the FORM_TYPE {NS}")
        values: dict[str, tuple[str, ...]] = {}
        for each in form.fields:
            if each.var == "FORM_TYPE":
                continue
            if each.var is None:
                raise MamError("bad-request", "a submitted field needs a 'var'")
            if each.var not in _FIELD_TYPES:
                raise MamError("feature-not-implemented", f"unknown query field {each.var!r}")
            values[each.var] = each.values
        with_jid = None
        if raw := _single(values, "with"):
            try:
                with_jid = JID.parse(raw)
            except JIDError as err:
                raise MamError("jid-malformed", f"'with' is not a JID: {err}") from None
        start = _single(values, "start")
        end = _single(values, "end")
        return cls(
            with_jid=with_jid,
            start=_datetime(start) if start else None,
            end=_datetime(end) if end else None,
            before_id=_single(values, "before-id") or None,
            after_id=_single(values, "after-id") or None,
            ids=tuple(values["ids"]) if "ids" in values else None,
        )

    def to_form(self) -> DataForm:
        """The submitted form a client sends for this filter."""
        fields = [Field("FORM_TYPE", "hidden", values=(NS,))]
        single = {
            "with": str(self.with_jid) if self.with_jid is not None else None,
            "start": format_stamp(self.start) if self.start is not None else None,
            "end": format_stamp(self.end) if self.end is not None else None,
            "before-id": self.before_id,
            "after-id": self.after_id,
        }
        fields += [Field(var, values=(value,)) for var, value in single.items() if value is not None]
        if self.ids is not None:
            fields.append(Field("ids", values=self.ids))
        return DataForm("submit", tuple(fields))


def query_form() -> Element:
    """§4.1.5: the form a server returns to an IQ get, listing the fields it supports; 'ids'
    carries the XEP-0122 validation that marks its list as open."""
    form = DataForm("form", (
        Field("FORM_TYPE", "hidden", values=(NS,)),
        *(Field(var, kind) for var, kind in _FIELD_TYPES.items()),
    )).to_xml()  # fmt: skip
    for each in form:
        if each.get("var") == "ids":
            validate = sub(each, _VALIDATE, {"datatype": "xs:string"})
            sub(validate, _OPEN)
    return form


@dataclass(frozen=True)
class Query:
    """An archive query (§4): filters, paging, and whether the page comes newest first (§4.3.4)."""

    queryid: str | None = None
    filter: Filter = field(default_factory=Filter)
    rsm: ResultSet | None = None
    flip_page: bool = False

    @classmethod
    def from_xml(cls, el: Element) -> Query:
        if el.tag != QUERY:
            raise MamError("bad-request", f"expected a MAM query, got {el.tag}")
        form = el.find(_X)
        rsm = el.find(SET)
        try:
            flt = Filter.from_form(DataForm.from_xml(form)) if form is not None else Filter()
            result_set = ResultSet.from_xml(rsm) if rsm is not None else None
        except (DataFormError, RsmError) as err:
            raise MamError("bad-request", str(err)) from None
        return cls(el.get("queryid"), flt, result_set, el.find(_FLIP_PAGE) is not None)

    def to_xml(self) -> Element:
        query = element(QUERY, {"queryid": self.queryid})
        if self.filter != Filter():
            query.append(self.filter.to_form().to_xml())
        if self.rsm is not None:
            query.append(self.rsm.to_xml())
        if self.flip_page:
            sub(query, _FLIP_PAGE)
        return query


@dataclass(frozen=True)
class Result:
    """One archived message sent to the querying client (§4.2): its archive id and the message
    as XEP-0297 forwards it, stamped with the time it was archived."""

    id: str
    forwarded: Forwarded
    queryid: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Result:
        if el.tag != RESULT:
            raise MamError("bad-request", f"expected a MAM result, got {el.tag}")
        item_id = el.get("id")
        forwarded = el.find(FORWARDED)
        if not item_id or forwarded is None:
            raise MamError("bad-request", "a result needs an 'id' and a <forwarded/> message")
        try:
            return cls(item_id, Forwarded.from_xml(forwarded), el.get("queryid"))
        except ForwardError as err:
            raise MamError("bad-request", str(err)) from None

    def to_xml(self) -> Element:
        result = element(RESULT, {"queryid": self.queryid, "id": self.id})
        result.append(self.forwarded.to_xml())
        return result


@dataclass(frozen=True)
class Fin:
    """The end of a query's results, in the IQ result (§4.3.2): paging state and completeness."""

    rsm: ResultSet
    complete: bool = False
    stable: bool = True

    @classmethod
    def from_xml(cls, el: Element) -> Fin:
        if el.tag != FIN:
            raise MamError("bad-request", f"expected a MAM fin, got {el.tag}")
        rsm = el.find(SET)
        try:
            result_set = ResultSet.from_xml(rsm) if rsm is not None else ResultSet()
        except RsmError as err:
            raise MamError("bad-request", str(err)) from None
        return cls(result_set, el.get("complete") in ("true", "1"), el.get("stable") not in ("false", "0"))

    def to_xml(self) -> Element:
        fin = element(FIN, {
            "complete": "true" if self.complete else "false",
            "stable": None if self.stable else "false",
        })  # fmt: skip
        fin.append(self.rsm.to_xml())
        return fin


@dataclass(frozen=True)
class Prefs:
    """XEP-0441 §2.1: the default archiving policy and the JIDs always and never archived."""

    default: str = "always"
    always: tuple[JID, ...] = ()
    never: tuple[JID, ...] = ()

    @classmethod
    def from_xml(cls, el: Element) -> Prefs:
        if el.tag != PREFS:
            raise MamError("bad-request", f"expected MAM preferences, got {el.tag}")
        default = el.get("default")
        if default not in POLICIES:
            raise MamError("bad-request", f"'default' must be one of {', '.join(POLICIES)}")
        return cls(default, _jids(el.find(_ALWAYS)), _jids(el.find(_NEVER)))

    def to_xml(self) -> Element:
        prefs = element(PREFS, {"default": self.default})
        for name, jids in ((_ALWAYS, self.always), (_NEVER, self.never)):
            listed = sub(prefs, name)
            for jid in jids:
                sub(listed, _JID, text=str(jid))
        return prefs

    def archives(self, target: JID) -> bool | None:
        """XEP-0441 §2.3: whether messages with ``target`` are archived; None when that depends
        on whether the contact is in the roster. 'never' wins over 'always'.

        A listed bare JID matches every resource of it; a listed full JID only itself.
        """
        if self.never and any(_matches(listed, target) for listed in self.never):
            return False
        if self.always and any(_matches(listed, target) for listed in self.always):
            return True
        return None if self.default == "roster" else self.default == "always"


def _matches(listed: JID, target: JID) -> bool:
    return listed == (target.bare if listed.is_bare else target)


def _jids(listed: Element | None) -> tuple[JID, ...]:
    if listed is None:
        return ()
    jids: list[JID] = []
    for each in listed.findall(_JID):
        try:
            jids.append(JID.parse((each.text or "").strip()))
        except JIDError as err:
            raise MamError("jid-malformed", f"not a JID in the preferences: {err}") from None
    return tuple(dict.fromkeys(jids))


@dataclass(frozen=True)
class Edge:
    """The first or last message of an archive: its id and when it was archived (§5)."""

    id: str
    stamp: datetime


@dataclass(frozen=True)
class Metadata:
    """§5: the first and last message of the archive; both None for an empty archive."""

    start: Edge | None = None
    end: Edge | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Metadata:
        if el.tag != METADATA:
            raise MamError("bad-request", f"expected MAM metadata, got {el.tag}")
        return cls(_edge(el.find(_START)), _edge(el.find(_END)))

    def to_xml(self) -> Element:
        metadata = element(METADATA)
        for name, edge in ((_START, self.start), (_END, self.end)):
            if edge is not None:
                sub(metadata, name, {"id": edge.id, "timestamp": format_stamp(edge.stamp)})
        return metadata


def _edge(el: Element | None) -> Edge | None:
    if el is None:
        return None
    item_id = el.get("id")
    if not item_id:
        raise MamError("bad-request", "an archive edge needs an 'id'")
    return Edge(item_id, _datetime(el.get("timestamp", "")))
