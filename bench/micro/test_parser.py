"""StreamParser (RFC 6120 §4) throughput on typical client input."""

from __future__ import annotations

from pytest_benchmark.fixture import BenchmarkFixture

from schnack.xmpp.parser import StanzaReceived, StreamParser

from .conftest import OMEMO, OPEN, PRESENCE, ROSTER_GET

BATCH = 100


def _parse(data: bytes) -> int:
    parser = StreamParser(max_stanza_bytes=10**6)
    parser.feed(OPEN)
    events = parser.feed(data) + parser.flush()
    return sum(isinstance(e, StanzaReceived) for e in events)


def test_parse_100_omemo_messages_in_one_read(benchmark: BenchmarkFixture) -> None:
    assert benchmark(_parse, OMEMO.encode() * BATCH) == BATCH


def test_parse_mixed_stanzas_one_read_each(benchmark: BenchmarkFixture) -> None:
    """One read per stanza, as from a phone sending now and then."""
    reads = [s.encode() for s in (OMEMO, PRESENCE, ROSTER_GET)] * (BATCH // 3)

    def run() -> int:
        parser = StreamParser(max_stanza_bytes=10**6)
        parser.feed(OPEN)
        return sum(len(parser.feed(chunk)) for chunk in reads)

    assert benchmark(run) == len(reads)
