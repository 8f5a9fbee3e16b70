"""Serializing stanzas for a client stream (RFC 6120 §4.8: no redundant xmlns)."""

from __future__ import annotations

from pytest_benchmark.fixture import BenchmarkFixture

from schnack.xmpp import ns
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.xml import serialize

from .conftest import OMEMO, PRESENCE


def _element(xml: str) -> object:
    head, sep, rest = xml.partition(">")
    return parse_frame(f"{head} xmlns='{ns.CLIENT}'{sep}{rest}".encode(), 10**6)


def test_serialize_omemo_message(benchmark: BenchmarkFixture) -> None:
    el = _element(OMEMO)
    out = benchmark(serialize, el, ns.CLIENT)
    assert out.startswith("<message ") and "eu.siacs.conversations.axolotl" in out


def test_serialize_presence_with_caps(benchmark: BenchmarkFixture) -> None:
    el = _element(PRESENCE)
    out = benchmark(serialize, el, ns.CLIENT)
    assert out.startswith("<presence>") and "ver='Ge7KVtxRQuOv4D3oUzvKfOLtdXo='" in out.replace('"', "'")
