"""XEP-0176 ICE-UDP transport and XEP-0320 fingerprints: the XEPs' examples, round trips, bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.jingle_ice import Candidate, Fingerprint, IceUdpTransport, JinglePayloadError
from schnack.xmpp.xml import serialize

# XEP-0176 §5.2 (Example 1) candidates, with the XEP-0320 §3 (Example 1) fingerprint added.
TRANSPORT = b"""<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' pwd='asd88fgpdd777uzjYhagZg' ufrag='8hhy'>
  <fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='actpass'>02:1A:CC:54:27:AB:EB:9C:53:3F:3E:4B:65:2E:7D:46:3F:54:42:CD:54:F1:7A:03:A2:7D:F9:B0:7F:46:19:B2</fingerprint>
  <candidate component='1' foundation='1' generation='0' id='el0747fg11' ip='10.0.1.1' network='1'
             port='8998' priority='2130706431' protocol='udp' type='host'/>
  <candidate component='1' foundation='2' generation='0' id='y3s2b30v3r' ip='192.0.2.3' network='1'
             port='45664' priority='1694498815' protocol='udp' rel-addr='10.0.1.1' rel-port='8998' type='srflx'/>
</transport>"""


def parse(data: bytes) -> IceUdpTransport:
    return IceUdpTransport.from_xml(parse_frame(data, 10**6))


def round_trip(transport: IceUdpTransport) -> IceUdpTransport:
    return parse(serialize(transport.to_xml()).encode())


def test_xep_example() -> None:
    transport = parse(TRANSPORT)
    assert (transport.ufrag, transport.pwd) == ("8hhy", "asd88fgpdd777uzjYhagZg")
    host, srflx = transport.candidates
    assert host == Candidate(1, "1", 0, "el0747fg11", "10.0.1.1", 8998, 2130706431, "udp", "host", 1)
    assert (srflx.type, srflx.rel_addr, srflx.rel_port) == ("srflx", "10.0.1.1", 8998)
    assert transport.fingerprint == Fingerprint(
        "sha-256",
        "02:1A:CC:54:27:AB:EB:9C:53:3F:3E:4B:65:2E:7D:46:3F:54:42:CD:54:F1:7A:03:A2:7D:F9:B0:7F:46:19:B2",
        "actpass",
    )
    assert round_trip(transport) == transport


def test_trickled_transport_without_credentials() -> None:
    transport = IceUdpTransport(candidates=parse(TRANSPORT).candidates[:1])
    assert round_trip(transport) == transport
    assert serialize(IceUdpTransport().to_xml()) == '<transport xmlns="urn:xmpp:jingle:transports:ice-udp:1"/>'


@pytest.mark.parametrize(
    "candidate",
    [
        "<candidate component='1' foundation='1' ip='10.0.0.1' port='1' priority='1' protocol='udp'/>",
        "<candidate component='1' foundation='1' ip='10.0.0.1' port='70000' priority='1' protocol='udp' type='host'/>",
        "<candidate component='x' foundation='1' ip='10.0.0.1' port='1' priority='1' protocol='udp' type='host'/>",
        "<candidate component='1' foundation='1' ip='10.0.0.1' port='1' priority='1' protocol='udp' type='bogus'/>",
        "<candidate component='1' foundation='1' port='1' priority='1' protocol='udp' type='host'/>",
    ],
)
def test_bad_candidates(candidate: str) -> None:
    with pytest.raises(JinglePayloadError):
        parse(f"<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1'>{candidate}</transport>".encode())


def test_bad_fingerprints() -> None:
    for fp in ("<fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='sideways'>AA</fingerprint>",
               "<fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256'/>"):
        with pytest.raises(JinglePayloadError):
            parse(f"<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1'>{fp}</transport>".encode())


tokens = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789+/", min_size=1, max_size=12)
candidates = st.builds(
    Candidate,
    component=st.integers(1, 2),
    foundation=tokens,
    generation=st.integers(0, 5),
    id=tokens,
    ip=st.ip_addresses().map(str),
    port=st.integers(0, 65535),
    priority=st.integers(0, 2**32 - 1),
    protocol=st.sampled_from(["udp", "tcp"]),
    type=st.sampled_from(["host", "srflx", "relay", "prflx"]),
    network=st.integers(0, 9),
    rel_addr=st.none() | st.ip_addresses().map(str),
    rel_port=st.none() | st.integers(0, 65535),
)


@given(st.builds(IceUdpTransport, tokens | st.none(), tokens | st.none(), st.lists(candidates, max_size=4).map(tuple)))
def test_any_transport_round_trips(transport: IceUdpTransport) -> None:
    assert round_trip(transport) == transport


# The verified-call fingerprint of Conversations and Dino: the value OMEMO-encrypted for one device.
ENCRYPTED = b"""<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='8hhy' pwd='asd88fgpdd777uzjYhagZg'>
  <fingerprint xmlns='http://gultsch.de/xmpp/drafts/omemo/dlts-srtp-verification' hash='sha-256' setup='actpass'>
    <encrypted xmlns='eu.siacs.conversations.axolotl'>
      <header sid='5678'><key rid='1234'>a2V5</key><iv>aXY=</iv></header>
      <payload>cGF5bG9hZA==</payload>
    </encrypted>
  </fingerprint>
</transport>"""


def test_encrypted_fingerprint() -> None:
    transport = parse(ENCRYPTED)
    assert transport.fingerprint is None
    (encrypted,) = transport.encrypted_fingerprints
    assert (encrypted.hash, encrypted.setup) == ("sha-256", "actpass")
    inner = parse_frame(encrypted.encrypted.encode(), 10**6)
    assert inner.tag == "{eu.siacs.conversations.axolotl}encrypted"
    assert inner.findtext("{eu.siacs.conversations.axolotl}payload") == "cGF5bG9hZA=="
    assert round_trip(transport) == transport
    with pytest.raises(JinglePayloadError):
        parse(b"<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1'><fingerprint "
              b"xmlns='http://gultsch.de/xmpp/drafts/omemo/dlts-srtp-verification' hash='sha-256'>AA</fingerprint></transport>")
