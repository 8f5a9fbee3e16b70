"""The HT-* token mechanisms (draft-schmaus-kitten-sasl-ht): proofs both ways, channel bindings,
and the stored-hash key that lets a server keep no token in clear."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from schnack.xmpp import ht
from schnack.xmpp.sasl import SaslFailure

TOKEN = "t" * 96
BINDINGS = {"tls-exporter": b"E" * 32, "tls-server-end-point": b"S" * 32}


def test_a_long_token_is_checked_with_its_hash_as_key() -> None:
    stored = hashlib.sha256(TOKEN.encode()).digest()
    assert ht.key_of(TOKEN) == stored
    assert ht.initiator(stored, b"cb") == hmac.new(TOKEN.encode(), b"Initiatorcb", "sha256").digest()
    assert ht.key_of("short") == b"short"


@pytest.mark.parametrize(("mechanism", "binding"), [
    ("HT-SHA-256-NONE", b""), ("HT-SHA-256-EXPR", b"E" * 32), ("HT-SHA-256-ENDP", b"S" * 32),
])
def test_client_message_and_server_answer(mechanism: str, binding: bytes) -> None:
    message = ht.client_message(mechanism, "alice", TOKEN, BINDINGS.get)
    name, proof = ht.split_message(message)
    assert name == "alice"
    assert proof == hmac.new(TOKEN.encode(), b"Initiator" + binding, "sha256").digest()
    answer = ht.responder(ht.key_of(TOKEN), binding)
    ht.check_server(mechanism, TOKEN, BINDINGS.get, answer)
    with pytest.raises(SaslFailure):
        ht.check_server(mechanism, TOKEN, BINDINGS.get, ht.responder(ht.key_of(TOKEN), b"other"))


def test_mechanisms_follow_the_bindings_a_connection_has() -> None:
    assert ht.offered([]) == ["HT-SHA-256-NONE"]
    assert ht.offered(["tls-exporter", "tls-server-end-point"]) == [
        "HT-SHA-256-EXPR", "HT-SHA-256-ENDP", "HT-SHA-256-NONE"
    ]
    with pytest.raises(SaslFailure) as missing:
        ht.client_message("HT-SHA-256-UNIQ", "alice", TOKEN, BINDINGS.get)
    assert missing.value.condition == "invalid-mechanism"
    with pytest.raises(SaslFailure):
        ht.parse_mechanism("HT-MD5-NONE")
    with pytest.raises(SaslFailure):
        ht.split_message(b"no separator")
