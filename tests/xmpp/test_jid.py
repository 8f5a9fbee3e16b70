"""JID parsing and normalisation (RFC 7622)."""

from __future__ import annotations

import copy
import operator
import os
import pickle
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schnack.xmpp.jid import JID, JIDError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("juliet@example.com", "juliet@example.com"),
        ("Juliet@Example.COM/Balcony", "juliet@example.com/Balcony"),
        ("juliet@example.com/foo bar", "juliet@example.com/foo bar"),
        ("juliet@example.com/foo@bar", "juliet@example.com/foo@bar"),
        ("example.com.", "example.com"),
        ("été@example.com", "été@example.com"),
        ("example.com/res", "example.com/res"),
    ],
)
def test_valid(raw: str, expected: str) -> None:
    assert str(JID.parse(raw)) == expected


@pytest.mark.parametrize(
    "raw", ["@example.com", "juliet@example.com/", "juliet@", "", "foo bar@example.com", "ju'liet@example.com", "a@b..c",
            # RFC 7622 §3.2 (RFC 5890 §2.3.1): a label is at most 63 octets.
            f"a@{'b' * 64}.example", f"a@{'é' * 32}.example"]
)
def test_invalid(raw: str) -> None:
    with pytest.raises(JIDError):
        JID.parse(raw)


def test_bare() -> None:
    jid = JID.parse("a@b/c")
    assert jid.bare == JID.parse("a@b") and jid.bare.is_bare and not jid.is_bare


@given(st.text(max_size=40))
def test_normalising_twice_changes_nothing(raw: str) -> None:
    try:
        once = JID.parse(raw)
    except JIDError:
        return
    assert JID.parse(str(once)) == once


def test_a_jid_copied_or_pickled_in_another_process_is_the_same_jid() -> None:
    """A JID keeps its text and hash, made once; a pickle carries its parts, not a hash that
    another process (another string hash seed) computed."""
    jid = JID.parse("Alice@Example.org/phone")
    for other in (copy.copy(jid), copy.deepcopy(jid), pickle.loads(pickle.dumps(jid))):
        assert other == jid and hash(other) == hash(jid) and str(other) == "alice@example.org/phone"
    made = subprocess.run(
        [sys.executable, "-c", "import pickle, sys; from schnack.xmpp.jid import JID; "
         "sys.stdout.buffer.write(pickle.dumps(JID.parse('alice@example.org/phone')))"],
        env={**os.environ, "PYTHONHASHSEED": "7"}, capture_output=True, check=True,
    ).stdout
    assert {jid: "found"}[pickle.loads(made)] == "found"


@pytest.mark.parametrize("left, right", [
    (JID("a", "b", "c"), JID("a", "b", "d")),
    (JID("a", "b", "c"), JID("a", "b")),
    (JID("a", "b"), JID("a", "c")),
    (JID("a", "b"), JID(None, "b")),
    (JID(None, "a@b"), JID("a", "b")),
])  # fmt: skip
def test_jids_differing_in_any_part_are_not_equal(left: JID, right: JID) -> None:
    # Both operators, each way: != of a compiled class is made from its __eq__.
    assert operator.ne(left, right) and operator.ne(right, left) and not operator.eq(left, right)
    same = JID(left.local, left.domain, left.resource)
    assert operator.eq(left, same) and not operator.ne(left, same)


def test_a_jid_is_no_string() -> None:
    jid = JID("a", "b", "c")
    assert operator.ne(jid, "a@b/c") and operator.ne("a@b/c", jid) and jid not in ("a@b/c",)
