"""XEP-0313 payloads (query, filter form, result, fin, metadata) and XEP-0441 preferences."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from schnack.xmpp.jid import JID
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.dataforms import DataForm
from schnack.xmpp.payloads.forward import Forwarded
from schnack.xmpp.payloads.mam import (
    Edge,
    Filter,
    Fin,
    MamError,
    Metadata,
    Prefs,
    Query,
    Result,
    query_form,
)  # fmt: skip
from schnack.xmpp.payloads.rsm import ResultSet
from schnack.xmpp.xml import Element, serialize

MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
XDATA = "jabber:x:data"


def el(xml: str) -> Element:
    return parse_frame(xml.encode(), 10**6)


def again(element: Element) -> Element:
    return el(serialize(element))


def form(*fields: str, kind: str = "submit") -> str:
    hidden = f"<field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>"
    return f"<x xmlns='{XDATA}' type='{kind}'>{hidden}{''.join(fields)}</x>"


def field(var: str, *values: str) -> str:
    return f"<field var='{var}'>{''.join(f'<value>{v}</value>' for v in values)}</field>"


def test_query_with_every_filter_rsm_and_flip() -> None:
    # XEP-0313 §4.1 and §4.3.4
    query = Query.from_xml(el(
        f"<query xmlns='{MAM}' queryid='f27'>"
        + form(field("with", "juliet@capulet.lit"), field("start", "2010-06-07T00:00:00Z"),
               field("end", "2010-07-07T13:23:54.5+02:00"), field("after-id", "28482"),
               field("before-id", "09af3"), field("ids", "a", "b"))
        + f"<set xmlns='{RSM}'><max>10</max><before/></set><flip-page/></query>"
    ))  # fmt: skip
    assert query.queryid == "f27"
    assert query.flip_page
    assert query.rsm == ResultSet(max=10, before="")
    flt = query.filter
    assert flt.with_jid == JID.parse("juliet@capulet.lit")
    assert flt.start == datetime(2010, 6, 7, tzinfo=UTC)
    assert flt.end == datetime(2010, 7, 7, 13, 23, 54, 500000, tzinfo=timezone(timedelta(hours=2)))
    assert (flt.after_id, flt.before_id, flt.ids) == ("28482", "09af3", ("a", "b"))
    assert Query.from_xml(again(query.to_xml())) == query


def test_empty_query() -> None:
    query = Query.from_xml(el(f"<query xmlns='{MAM}'/>"))
    assert query == Query()
    assert Query.from_xml(again(query.to_xml())) == query


def test_form_without_form_type_and_empty_values() -> None:
    query = Query.from_xml(el(
        f"<query xmlns='{MAM}'><x xmlns='{XDATA}' type='submit'>{field('with')}{field('start', '')}</x></query>"
    ))
    assert query.filter == Filter()


@pytest.mark.parametrize(("fields", "condition"), [
    (field("start", "yesterday"), "bad-request"),
    (field("start", "2010-06-07"), "bad-request"),
    (field("end", "2010-06-07T10:00:00"), "bad-request"),
    (field("with", "@capulet.lit"), "jid-malformed"),
    (field("with", "a@b", "c@d"), "bad-request"),
    (field("include-groupchat", "true"), "feature-not-implemented"),
    (field("{urn:example}free-text-search", "love"), "feature-not-implemented"),
])  # fmt: skip
def test_bad_filters(fields: str, condition: str) -> None:
    with pytest.raises(MamError) as caught:
        Query.from_xml(el(f"<query xmlns='{MAM}'>{form(fields)}</query>"))
    assert caught.value.condition == condition


@pytest.mark.parametrize("xml", [
    f"<query xmlns='{MAM}'>{form(kind='form')}</query>",
    f"<query xmlns='{MAM}'><x xmlns='{XDATA}' type='submit'>"
    f"<field var='FORM_TYPE' type='hidden'><value>urn:example</value></field></x></query>",
    f"<query xmlns='{MAM}'><x xmlns='{XDATA}' type='nonsense'/></query>",
    f"<query xmlns='{MAM}'><x xmlns='{XDATA}' type='submit'><field><value>x</value></field></x></query>",
    f"<query xmlns='{MAM}'><set xmlns='{RSM}'><max>many</max></set></query>",
    "<query xmlns='urn:xmpp:mam:1'/>",
])  # fmt: skip
def test_bad_queries(xml: str) -> None:
    with pytest.raises(MamError) as caught:
        Query.from_xml(el(xml))
    assert caught.value.condition == "bad-request"


def test_filter_form_round_trip() -> None:
    flt = Filter(JID.parse("romeo@montague.lit/orchard"), datetime(2010, 8, 7, tzinfo=UTC),
                 datetime(2010, 8, 8, 1, 2, 3, 456000, tzinfo=UTC), "b", "a", ("x",))
    assert Filter.from_form(DataForm.from_xml(again(flt.to_form().to_xml()))) == flt


def test_query_form_lists_the_fields_with_an_open_ids_list() -> None:
    # XEP-0313 §4.1.5
    x = query_form()
    parsed = DataForm.from_xml(again(x))
    assert parsed.type == "form" and parsed.form_type == MAM
    types = {f.var: f.type for f in parsed.fields}
    assert types == {
        "FORM_TYPE": "hidden", "with": "jid-single", "start": "text-single", "end": "text-single",
        "before-id": "text-single", "after-id": "text-single", "ids": "list-multi",
    }  # fmt: skip
    assert all(not f.required for f in parsed.fields)
    (ids,) = [f for f in x if f.get("var") == "ids"]
    validate = ids.find("{http://jabber.org/protocol/xdata-validate}validate")
    assert validate is not None and validate.get("datatype") == "xs:string"
    assert validate.find("{http://jabber.org/protocol/xdata-validate}open") is not None


def test_result_round_trip() -> None:
    # XEP-0313 §4.2
    xml = (f"<result xmlns='{MAM}' queryid='f27' id='28482-98726-73623'>"
           "<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='2010-07-10T23:08:25Z'/>"
           "<message xmlns='jabber:client' from='witch@shakespeare.lit' to='macbeth@shakespeare.lit'>"
           "<body>Hail to thee</body></message></forwarded></result>")  # fmt: skip
    result = Result.from_xml(el(xml))
    assert (result.id, result.queryid) == ("28482-98726-73623", "f27")
    assert result.forwarded.stamp == datetime(2010, 7, 10, 23, 8, 25, tzinfo=UTC)
    assert result.forwarded.stanza.findtext("{jabber:client}body") == "Hail to thee"
    back = Result.from_xml(again(result.to_xml()))
    assert (back.id, back.queryid, back.forwarded.stamp) == (result.id, result.queryid, result.forwarded.stamp)
    assert serialize(back.forwarded.stanza) == serialize(result.forwarded.stanza)


@pytest.mark.parametrize("xml", [
    f"<result xmlns='{MAM}' id='x'/>",
    f"<result xmlns='{MAM}'><forwarded xmlns='urn:xmpp:forward:0'/></result>",
    f"<result xmlns='{MAM}' id='x'><forwarded xmlns='urn:xmpp:forward:0'/></result>",
])  # fmt: skip
def test_bad_results(xml: str) -> None:
    with pytest.raises(MamError):
        Result.from_xml(el(xml))


def test_result_with_a_built_forward() -> None:
    message = el("<message xmlns='jabber:client' to='a@b'><body>x</body></message>")
    result = Result("id1", Forwarded(message, datetime(2024, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)))
    text = serialize(result.to_xml())
    assert "stamp=\"2024-01-02T03:04:05.006000Z\"" in text
    assert '<message xmlns="jabber:client" to="a@b">' in text


@pytest.mark.parametrize("fin", [
    Fin(ResultSet(first="a", first_index=0, last="b", count=20), complete=True),
    Fin(ResultSet(first="a", last="b")),
    Fin(ResultSet(count=0), complete=True, stable=False),
])  # fmt: skip
def test_fin_round_trip(fin: Fin) -> None:
    assert Fin.from_xml(again(fin.to_xml())) == fin


def test_fin_as_written() -> None:
    # XEP-0313 §4.3.2: complete='true' only on the last page.
    assert serialize(Fin(ResultSet(count=0), complete=True).to_xml()) == (
        f'<fin xmlns="{MAM}" complete="true"><set xmlns="{RSM}"><count>0</count></set></fin>')
    assert Fin.from_xml(el(f"<fin xmlns='{MAM}'/>")) == Fin(ResultSet())


def test_prefs_parse_and_round_trip() -> None:
    # XEP-0441 §2.1
    prefs = Prefs.from_xml(el(
        f"<prefs xmlns='{MAM}' default='roster'><always><jid>romeo@montague.lit</jid></always>"
        "<never><jid>montague@montague.lit</jid><jid>montague@montague.lit</jid></never></prefs>"
    ))
    assert prefs == Prefs("roster", (JID.parse("romeo@montague.lit"),), (JID.parse("montague@montague.lit"),))
    assert Prefs.from_xml(again(prefs.to_xml())) == prefs
    assert serialize(Prefs("always").to_xml()) == f'<prefs xmlns="{MAM}" default="always"><always/><never/></prefs>'
    assert Prefs.from_xml(el(f"<prefs xmlns='{MAM}' default='never'/>")) == Prefs("never")


@pytest.mark.parametrize(("xml", "condition"), [
    (f"<prefs xmlns='{MAM}'/>", "bad-request"),
    (f"<prefs xmlns='{MAM}' default='sometimes'/>", "bad-request"),
    (f"<prefs xmlns='{MAM}' default='always'><never><jid>@x</jid></never></prefs>", "jid-malformed"),
])  # fmt: skip
def test_bad_prefs(xml: str, condition: str) -> None:
    with pytest.raises(MamError) as caught:
        Prefs.from_xml(el(xml))
    assert caught.value.condition == condition


def test_prefs_matching() -> None:
    # XEP-0441 §2.3.1: a bare JID matches every resource, a full JID only itself; never wins.
    prefs = Prefs("roster", always=(JID.parse("romeo@montague.lit"), JID.parse("nurse@capulet.lit/kitchen")),
                  never=(JID.parse("tybalt@capulet.lit"), JID.parse("romeo@montague.lit/secret")))
    assert prefs.archives(JID.parse("romeo@montague.lit/orchard")) is True
    assert prefs.archives(JID.parse("romeo@montague.lit/secret")) is False
    assert prefs.archives(JID.parse("nurse@capulet.lit/kitchen")) is True
    assert prefs.archives(JID.parse("nurse@capulet.lit/garden")) is None
    assert prefs.archives(JID.parse("tybalt@capulet.lit/street")) is False
    assert Prefs("always").archives(JID.parse("a@b")) is True
    assert Prefs("never").archives(JID.parse("a@b")) is False


def test_metadata() -> None:
    # XEP-0313 §5
    metadata = Metadata.from_xml(el(
        f"<metadata xmlns='{MAM}'><start id='YWxwaGEg' timestamp='2008-08-22T21:09:04Z'/>"
        "<end id='b21lZ2Eg' timestamp='2020-04-20T14:34:21Z'/></metadata>"
    ))
    assert metadata == Metadata(Edge("YWxwaGEg", datetime(2008, 8, 22, 21, 9, 4, tzinfo=UTC)),
                                Edge("b21lZ2Eg", datetime(2020, 4, 20, 14, 34, 21, tzinfo=UTC)))
    assert Metadata.from_xml(again(metadata.to_xml())) == metadata
    assert Metadata.from_xml(again(Metadata().to_xml())) == Metadata()
    with pytest.raises(MamError):
        Metadata.from_xml(el(f"<metadata xmlns='{MAM}'><start timestamp='2008-08-22T21:09:04Z'/></metadata>"))
