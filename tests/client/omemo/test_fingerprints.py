"""Fingerprint URIs (XEP-0147 style, as Conversations writes and scans them) and fingerprint groups."""

from __future__ import annotations

import pytest

from schnack.client.omemo import OLDMEMO, TWOMEMO, Device, Trust
from schnack.client.omemo.fingerprints import (
    FingerprintUriError,
    UriKey,
    VerificationUri,
    effective_trust,
    grouped,
    match,
)
from schnack.xmpp.jid import JID

ALICE = JID.parse("alice@example.org")
ONE = "b1bd7615afd947335a8edce8b4bd45e0b8fa2938630c163df7094e1a286ecf6e"
TWO = "f723c4e2fea491b7246a5f2998de35510d470a5e5de79136ff81b22889194a56"


def fp(digits: str) -> str:
    return " ".join(digits[i:i + 8] for i in range(0, 64, 8))


def device(id: int, digits: str, *namespaces: str, active: bool = True) -> Device:
    return Device(ALICE, id, fp(digits), Trust.BLIND, active=active, namespaces=frozenset(namespaces))


def test_a_uri_lists_each_device_in_each_version_it_publishes() -> None:
    uri = VerificationUri.for_devices(ALICE, [device(1926933071, TWO, OLDMEMO, TWOMEMO), device(820222489, ONE, OLDMEMO)])
    assert str(uri) == (f"xmpp:alice@example.org?omemo-sid-820222489={ONE};omemo-sid-1926933071={TWO};"
                        f"omemo2-sid-1926933071={TWO}")
    assert VerificationUri.parse(str(uri)) == uri
    # A device that names no version is written as the legacy one, which every app reads.
    assert str(VerificationUri.for_devices(ALICE, [device(5, ONE)])) == f"xmpp:alice@example.org?omemo-sid-5={ONE}"


def test_what_conversations_and_siskin_write_is_read() -> None:
    # The code of an account with two devices, as quoted in tigase/siskin-im issue 16.
    text = f"xmpp:jid@example.com?omemo-sid-820222489={ONE};omemo-sid-1926933071={TWO}"
    uri = VerificationUri.parse(text)
    assert uri.jid == JID.parse("jid@example.com")
    assert uri.keys == (UriKey(fp(ONE), 820222489, OLDMEMO), UriKey(fp(TWO), 1926933071, OLDMEMO))
    assert str(uri) == text


@pytest.mark.parametrize(("text", "keys"), [
    # An action before the parameters, '&' between them, capitals and percent-encoding.
    (f"xmpp:al%69ce@example.org?message;omemo-sid-7={ONE.upper()}&name=Alice", (UriKey(fp(ONE), 7, OLDMEMO),)),
    (f"XMPP:alice@example.org?omemo2-sid-9={TWO}#fragment", (UriKey(fp(TWO), 9, TWOMEMO),)),
    # Conversations' oldest form, without a device id.
    (f"xmpp:alice@example.org?omemo={ONE}", (UriKey(fp(ONE)),)),
    # The same key twice is one key.
    (f"  xmpp:alice@example.org?omemo-sid-7={ONE};omemo-sid-7={ONE}\n", (UriKey(fp(ONE), 7, OLDMEMO),)),
])
def test_variants_are_read(text: str, keys: tuple[UriKey, ...]) -> None:
    uri = VerificationUri.parse(text)
    assert (uri.jid, uri.keys) == (ALICE, keys)


def test_a_jid_with_reserved_characters_is_encoded() -> None:
    odd = JID.parse("a;b?c#d%e+f@example.org")
    uri = VerificationUri(odd, (UriKey(fp(ONE), 3, OLDMEMO),))
    assert str(uri).startswith("xmpp:a%3Bb%3Fc%23d%25e+f@example.org?omemo-sid-3=")
    assert VerificationUri.parse(str(uri)) == uri


@pytest.mark.parametrize(("text", "error"), [
    ("https://example.org/?omemo-sid-1=" + ONE, "not an xmpp: URI"),
    ("xmpp://alice@example.org/bob@example.org?omemo-sid-1=" + ONE, "names an account to act as"),
    ("xmpp:example.org?omemo-sid-1=" + ONE, "not an account"),
    ("xmpp:@@example.org?omemo-sid-1=" + ONE, "no valid address"),
    ("xmpp:alice@example.org", "carries no OMEMO fingerprint"),
    ("xmpp:alice@example.org?message;name=Alice", "carries no OMEMO fingerprint"),
    ("xmpp:alice@example.org?omemo-sid-1=" + ONE[:-2], "not a fingerprint of 64 hex digits"),
    ("xmpp:alice@example.org?omemo-sid-1=" + ONE[:-1] + "g", "not a fingerprint of 64 hex digits"),
    ("xmpp:alice@example.org?omemo-sid-0=" + ONE, "no valid device id"),
    ("xmpp:alice@example.org?omemo-sid-4294967295=" + ONE, "no valid device id"),
])
def test_what_is_not_a_fingerprint_uri_is_refused(text: str, error: str) -> None:
    with pytest.raises(FingerprintUriError, match=error):
        VerificationUri.parse(text)


def test_a_uri_matches_only_keys_the_account_publishes() -> None:
    published = [device(7, ONE, OLDMEMO), device(8, TWO, OLDMEMO, TWOMEMO), device(9, "0" * 64, active=False)]
    both = VerificationUri.parse(f"xmpp:alice@example.org?omemo2-sid-8={TWO};omemo-sid-7={ONE};omemo-sid-8={TWO}")
    assert [d.id for d in match(both, published)] == [7, 8]
    assert [d.id for d in match(VerificationUri.parse(f"xmpp:alice@example.org?omemo={TWO}"), published)] == [8]
    with pytest.raises(FingerprintUriError, match=r"device 7 does NOT match: the code says 1111"):
        match(VerificationUri.parse(f"xmpp:alice@example.org?omemo-sid-8={TWO};omemo-sid-7={'1' * 64}"), published)
    with pytest.raises(FingerprintUriError, match="publishes no OMEMO device 9"):
        match(VerificationUri.parse(f"xmpp:alice@example.org?omemo-sid-9={'0' * 64}"), published)
    with pytest.raises(FingerprintUriError, match="no OMEMO key with fingerprint 22222222"):
        match(VerificationUri.parse(f"xmpp:alice@example.org?omemo={'2' * 64}"), published)


def test_fingerprints_are_grouped_as_apps_show_them() -> None:
    assert grouped(ONE.upper(), per_line=4) == ["b1bd7615 afd94733 5a8edce8 b4bd45e0",
                                                "b8fa2938 630c163d f7094e1a 286ecf6e"]
    assert grouped(fp(ONE)) == [fp(ONE)]


def test_a_key_nobody_decided_about_shows_the_trust_its_first_use_gives_it() -> None:
    new = Device(ALICE, 1, fp(ONE), Trust.UNDECIDED)
    verified = Device(ALICE, 2, fp(TWO), Trust.VERIFIED)
    assert effective_trust(new, [new]) is Trust.BLIND
    assert effective_trust(new, [new, verified]) is Trust.UNDECIDED
    assert effective_trust(new, [new], blind_trust=False) is Trust.UNDECIDED
    assert effective_trust(verified, [new, verified]) is Trust.VERIFIED
