"""XEP-0059 result set management: requests and responses, round trips, bad numbers."""

from __future__ import annotations

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.rsm import ResultSet, RsmError
from schnack.xmpp.xml import serialize

NS = "http://jabber.org/protocol/rsm"


def parse(xml: str) -> ResultSet:
    return ResultSet.from_xml(parse_frame(xml.encode(), 10**6))


def round_trip(rsm: ResultSet) -> ResultSet:
    return ResultSet.from_xml(parse_frame(serialize(rsm.to_xml()).encode(), 10**6))


def test_request_after() -> None:
    # XEP-0059 §2.2
    rsm = parse(f"<set xmlns='{NS}'><max>10</max><after>peterpan@neverland.lit</after></set>")
    assert rsm == ResultSet(max=10, after="peterpan@neverland.lit")


def test_empty_before_asks_for_the_last_page() -> None:
    # XEP-0059 §2.5
    rsm = parse(f"<set xmlns='{NS}'><max>10</max><before/></set>")
    assert rsm.before == "" and rsm.after is None
    assert round_trip(rsm) == rsm
    assert serialize(rsm.to_xml()) == f'<set xmlns="{NS}"><max>10</max><before/></set>'


def test_ids_of_an_indented_request_are_read_without_the_indentation() -> None:
    # XEP-0059 §2.5: a <before/> holding only white space still asks for the last page.
    rsm = parse(f"<set xmlns='{NS}'>\n  <max>10</max>\n  <before>\n  </before>\n</set>")
    assert rsm == ResultSet(max=10, before="")
    rsm = parse(f"<set xmlns='{NS}'><after>\n    peterpan@neverland.lit\n  </after></set>")
    assert rsm.after == "peterpan@neverland.lit"


def test_response_with_first_index_last_count() -> None:
    # XEP-0059 §2.1
    rsm = parse(f"<set xmlns='{NS}'><first index='0'>stpeter@jabber.org</first>"
                "<last>peterpan@neverland.lit</last><count>800</count></set>")
    assert rsm == ResultSet(first="stpeter@jabber.org", first_index=0, last="peterpan@neverland.lit", count=800)
    assert round_trip(rsm) == rsm


@pytest.mark.parametrize("rsm", [
    ResultSet(),
    ResultSet(max=0),
    ResultSet(max=5, before="x"),
    ResultSet(index=371, max=10),
    ResultSet(first="a", last="b"),
    ResultSet(count=0),
])  # fmt: skip
def test_round_trips(rsm: ResultSet) -> None:
    assert round_trip(rsm) == rsm


@pytest.mark.parametrize("xml", [
    f"<set xmlns='{NS}'><max>-1</max></set>",
    f"<set xmlns='{NS}'><max>ten</max></set>",
    f"<set xmlns='{NS}'><index>1.5</index></set>",
    f"<set xmlns='{NS}'><count>x</count></set>",
    f"<set xmlns='{NS}'><first index='a'>x</first></set>",
    f"<set xmlns='{NS}'><after/></set>",
    f"<set xmlns='{NS}'><after> </after></set>",
    "<set xmlns='urn:example'/>",
])  # fmt: skip
def test_bad_sets(xml: str) -> None:
    with pytest.raises(RsmError):
        parse(xml)
