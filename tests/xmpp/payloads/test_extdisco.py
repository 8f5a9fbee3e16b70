"""XEP-0215 payloads: the XEP's examples (§3.1, §3.2, §3.3), expiry times, round trips, bad input."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.extdisco import Credentials, ExtdiscoError, Service, Services
from schnack.xmpp.xml import serialize

# XEP-0215 §3.1, the server's list (Example 2).
ALL = b"""<services xmlns='urn:xmpp:extdisco:2'>
  <service host='stun.shakespeare.lit' port='9998' transport='udp' type='stun'/>
  <service host='relay.shakespeare.lit' password='jj929jkj5sadjfj93v3n' port='9999' transport='udp'
           type='turn' username='nb78932lkjlskjfdb7g8'/>
  <service host='192.0.2.1' port='8888' transport='udp' type='stun'/>
  <service host='192.0.2.1' port='8889' password='93jn3bakj9s832lrjbbz' transport='udp' type='turn'
           username='auu98sjl2wk3e9fjdsl7'/>
  <service host='ftp.shakespeare.lit' name='Shakespearean File Server' password='guest' port='20'
           transport='tcp' type='ftp' username='guest'/>
</services>"""
# §3.2 (Example 3) and §3.3 (Examples 6 and 7).
SELECTED = b"<services xmlns='urn:xmpp:extdisco:2' type='turn'/>"
CREDENTIALS_REQUEST = b"<credentials xmlns='urn:xmpp:extdisco:2'><service host='turn.shakespeare.lit' type='turn'/></credentials>"
CREDENTIALS_RESULT = b"""<credentials xmlns='urn:xmpp:extdisco:2'>
  <service host='turn.shakespeare.lit' type='turn' password='jj929jkj5sadjfj93v3n' username='nb78932lkjlskjfdb7g8'/>
</credentials>"""


def test_all_services_example() -> None:
    services = Services.from_xml(parse_frame(ALL, 10**6))
    assert len(services.services) == 5 and services.type is None
    assert services.services[0] == Service("stun", "stun.shakespeare.lit", 9998, "udp")
    assert services.services[1].username == "nb78932lkjlskjfdb7g8"
    assert services.services[4].name == "Shakespearean File Server"
    assert Services.from_xml(parse_frame(serialize(services.to_xml()).encode(), 10**6)) == services


def test_selected_and_credentials_examples() -> None:
    assert Services.from_xml(parse_frame(SELECTED, 10**6)) == Services(type="turn")
    request = Credentials.from_xml(parse_frame(CREDENTIALS_REQUEST, 10**6))
    assert request == Credentials((Service("turn", "turn.shakespeare.lit"),))
    result = Credentials.from_xml(parse_frame(CREDENTIALS_RESULT, 10**6))
    assert result.services[0].password == "jj929jkj5sadjfj93v3n"
    for payload in (request, result):
        assert Credentials.from_xml(parse_frame(serialize(payload.to_xml()).encode(), 10**6)) == payload


def test_expiry_and_restricted() -> None:
    service = Service(
        "turn", "turn.example", 3478, "udp", "1900000000:a@b", "pw", datetime(2030, 3, 17, 17, 46, 40, tzinfo=UTC), True
    )
    written = serialize(service.to_xml())
    assert 'expires="2030-03-17T17:46:40Z"' in written and 'restricted="1"' in written
    assert Service.from_xml(parse_frame(written.encode(), 10**6)) == service
    parsed = Service.from_xml(parse_frame(b"<service xmlns='urn:xmpp:extdisco:2' type='turn' host='h' restricted='true' expires='2030-03-17T19:46:40+02:00'/>", 10**6))
    assert parsed.restricted and parsed.expires == datetime(2030, 3, 17, 17, 46, 40, tzinfo=UTC)


@pytest.mark.parametrize(
    "service",
    [
        b"<service xmlns='urn:xmpp:extdisco:2' host='h'/>",
        b"<service xmlns='urn:xmpp:extdisco:2' type='turn'/>",
        b"<service xmlns='urn:xmpp:extdisco:2' type='turn' host='h' port='99999'/>",
        b"<service xmlns='urn:xmpp:extdisco:2' type='turn' host='h' transport='sctp'/>",
        b"<service xmlns='urn:xmpp:extdisco:2' type='turn' host='h' restricted='maybe'/>",
        b"<service xmlns='urn:xmpp:extdisco:2' type='turn' host='h' expires='tomorrow'/>",
        b"<service xmlns='urn:xmpp:extdisco:2' type='turn' host='h' expires='2030-03-17T17:46:40'/>",
    ],
)
def test_bad_services(service: bytes) -> None:
    with pytest.raises(ExtdiscoError):
        Service.from_xml(parse_frame(service, 10**6))
