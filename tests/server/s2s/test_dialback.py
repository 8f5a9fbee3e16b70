"""XEP-0185 dialback keys and the XEP-0220 elements; the secret kept in storage."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from schnack.server.s2s.dialback import (
    dialback_key,
    error_condition,
    error_result,
    key_matches,
    load_secret,
    result,
    verify,
)
from schnack.xmpp.xml import serialize

from ...harness import running

SECRET = "s3cr3tf0rd14lb4ck"


def test_key_is_the_xep_0185_hmac() -> None:
    # §3: HMAC-SHA256 keyed with the hex SHA-256 of the secret, over "receiving originating id".
    key = hashlib.sha256(SECRET.encode()).hexdigest().encode()
    text = b"example.net example.org D60000229F"
    assert dialback_key(SECRET, "example.net", "example.org", "D60000229F") == hmac.new(
        key, text, hashlib.sha256
    ).hexdigest()


def test_key_depends_on_every_input() -> None:
    base = dialback_key(SECRET, "example.net", "example.org", "D60000229F")
    assert len({
        base,
        dialback_key("another secret", "example.net", "example.org", "D60000229F"),
        dialback_key(SECRET, "example.com", "example.org", "D60000229F"),
        dialback_key(SECRET, "example.net", "example.com", "D60000229F"),
        dialback_key(SECRET, "example.net", "example.org", "D60000229G"),
        # The names swapped are another pair: a key for one direction is useless for the other.
        dialback_key(SECRET, "example.org", "example.net", "D60000229F"),
    }) == 6


def test_key_matches_only_the_right_key() -> None:
    key = dialback_key(SECRET, "example.net", "example.org", "abc")
    assert key_matches(SECRET, "example.net", "example.org", "abc", f"  {key}\n")
    assert not key_matches(SECRET, "example.net", "example.org", "abd", key)
    assert not key_matches(SECRET, "example.net", "example.org", "abc", "")


def test_elements() -> None:
    ns = 'xmlns="jabber:server:dialback"'
    assert serialize(result("a.example", "b.example", "k")) == f'<result {ns} from="a.example" to="b.example">k</result>'
    assert serialize(result("b.example", "a.example", type_="valid")) == (
        f'<result {ns} from="b.example" to="a.example" type="valid"/>'
    )
    assert serialize(verify("b.example", "a.example", "id1", "k")) == (
        f'<verify {ns} from="b.example" to="a.example" id="id1">k</verify>'
    )
    assert serialize(error_result("b.example", "a.example", "remote-server-not-found")) == (
        f'<result {ns} from="b.example" to="a.example" type="error"><error type="cancel">'
        '<remote-server-not-found xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></result>'
    )
    assert error_condition(error_result("b.example", "a.example", "forbidden")) == "forbidden"
    assert error_condition(result("b.example", "a.example", type_="error")) == "undefined-condition"


async def test_generated_secret_is_kept(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        first = await load_secret("", server.storage, "localhost")
        assert len(first) == 64
        assert await load_secret("", server.storage, "localhost") == first
        assert await load_secret("configured", server.storage, "localhost") == "configured"
    async with running(tmp_path) as server:
        assert await load_secret("", server.storage, "localhost") == first
