"""SASL client and server paired in memory (RFC 6120 §6, RFC 5802, RFC 7677, RFC 4616)."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
import scramp

from schnack.xmpp.sasl import (
    Challenge,
    NeedCredentials,
    SaslClient,
    SaslFailure,
    SaslServer,
    ScramCredential,
    Success,
    decode_b64,
    derive_credentials,
    encode_b64,
    server_mechanisms,
)

DOMAIN = "example.test"
EXPORTER = b"\x01" * 32
END_POINT = b"\x02" * 32
CREDS = {"alice": derive_credentials("pencil", iterations=4096)}


def bindings(kind: str) -> bytes | None:
    return {"tls-exporter": EXPORTER, "tls-server-end-point": END_POINT}.get(kind)


def no_bindings(_kind: str) -> bytes | None:
    return None


def exchange(
    client: SaslClient, *, tls: bool = True, binding: Callable[[str], bytes | None] = bindings,
    creds: dict[str, dict[str, ScramCredential]] = CREDS,
) -> Success:
    """Run a whole exchange as c2s would, client and server talking in memory."""
    server = SaslServer(client.mechanism, tls=tls, channel_binding=binding, domain=DOMAIN)
    step = server.start(client.initial())
    while True:
        if isinstance(step, NeedCredentials):
            step = server.provide_credentials(creds.get(step.username))
        elif isinstance(step, Challenge):
            step = server.respond(client.respond(step.data))
        else:
            assert step.data is None or client.mechanism != "PLAIN"
            if step.data is not None:
                client.success(step.data)
            return step


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_scram_logs_in_and_the_client_checks_the_server(mechanism: str) -> None:
    client = SaslClient("alice", "pencil", [mechanism])
    assert client.mechanism == mechanism
    assert exchange(client).username == "alice"


@pytest.mark.parametrize("kind", ["tls-exporter", "tls-server-end-point"])
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"])
def test_scram_plus_binds_to_the_channel(mechanism: str, kind: str) -> None:
    data = bindings(kind)
    assert data is not None
    client = SaslClient("alice", "pencil", [mechanism, "SCRAM-SHA-256"], channel_binding=(kind, data))
    assert client.mechanism == mechanism
    assert exchange(client).username == "alice"


def test_a_different_channel_fails_scram_plus() -> None:
    """A man in the middle terminates TLS itself: its channel's binding data differ."""
    client = SaslClient("alice", "pencil", ["SCRAM-SHA-256-PLUS"], channel_binding=("tls-exporter", b"\x09" * 32))
    with pytest.raises(SaslFailure) as err:
        exchange(client)
    assert err.value.condition == "not-authorized"


def test_an_unknown_binding_type_is_refused() -> None:
    client = SaslClient("alice", "pencil", ["SCRAM-SHA-256-PLUS"], channel_binding=("tls-unique", b"x"))
    with pytest.raises(SaslFailure) as err:
        exchange(client)
    assert err.value.condition == "not-authorized"


def test_plus_is_not_offered_without_a_binding() -> None:
    with pytest.raises(SaslFailure) as err:
        SaslServer("SCRAM-SHA-256-PLUS", tls=True, channel_binding=no_bindings, domain=DOMAIN)
    assert err.value.condition == "invalid-mechanism"


def test_client_prefers_the_strongest_offered_mechanism() -> None:
    offered = server_mechanisms(True, ["tls-exporter"])
    assert offered[0] == "SCRAM-SHA-256-PLUS"
    assert SaslClient("a", "b", offered).mechanism == "SCRAM-SHA-256"
    assert SaslClient("a", "b", offered, channel_binding=("tls-exporter", EXPORTER)).mechanism == "SCRAM-SHA-256-PLUS"
    assert SaslClient("a", "b", ["SCRAM-SHA-1", "PLAIN"]).mechanism == "SCRAM-SHA-1"
    with pytest.raises(SaslFailure) as err:
        SaslClient("a", "b", ["PLAIN"])
    assert err.value.condition == "invalid-mechanism"


@pytest.mark.parametrize(("password", "user"), [("wrong", "alice"), ("pencil", "mallory")])
def test_wrong_password_and_unknown_user_fail_alike(password: str, user: str) -> None:
    with pytest.raises(SaslFailure) as err:
        exchange(SaslClient(user, password, ["SCRAM-SHA-256"]))
    assert err.value.condition == "not-authorized"


def _salt_of(user: str) -> bytes:
    server = SaslServer("SCRAM-SHA-256", tls=True, channel_binding=bindings, domain=DOMAIN)
    step = server.start(SaslClient(user, "x", ["SCRAM-SHA-256"]).initial())
    assert isinstance(step, NeedCredentials)
    challenge = server.provide_credentials(CREDS.get(step.username))
    assert isinstance(challenge, Challenge)
    fields = dict(part.split("=", 1) for part in challenge.data.decode().split(","))
    return base64.b64decode(fields["s"])


def test_unknown_users_get_a_stable_salt() -> None:
    """The challenge must not reveal whether an account exists (no random salt per attempt)."""
    assert _salt_of("mallory") == _salt_of("mallory")
    assert _salt_of("mallory") != _salt_of("trudy")
    assert _salt_of("alice") == CREDS["alice"]["SHA-256"].salt


def test_the_client_rejects_a_server_that_cannot_prove_the_key() -> None:
    client = SaslClient("alice", "pencil", ["SCRAM-SHA-256"])
    impostor = {"alice": {"SHA-256": ScramCredential(CREDS["alice"]["SHA-256"].salt, 4096, b"\0" * 32, b"\0" * 32)}}
    with pytest.raises(SaslFailure):
        exchange(client, creds=impostor)


def test_downgrade_flag_is_refused_when_plus_was_offered() -> None:
    """RFC 5802 §6: 'y' means the client could bind but thinks the server can't."""
    server = SaslServer("SCRAM-SHA-256", tls=True, channel_binding=bindings, domain=DOMAIN)
    with pytest.raises(SaslFailure) as err:
        server.start(b"y,,n=alice,r=abcdef")
    assert err.value.condition == "not-authorized"
    plain_server = SaslServer("SCRAM-SHA-256", tls=True, channel_binding=no_bindings, domain=DOMAIN)
    assert isinstance(plain_server.start(b"y,,n=alice,r=abcdef"), NeedCredentials)


@pytest.mark.parametrize("message", [b"x,,n=alice,r=1", b"n,,r=1", b"garbage", b"\xff\xfe", b"p=tls-exporter,,n=alice,r=1"])
def test_malformed_client_first_messages(message: bytes) -> None:
    server = SaslServer("SCRAM-SHA-256", tls=True, channel_binding=bindings, domain=DOMAIN)
    with pytest.raises(SaslFailure) as err:
        server.start(message)
    assert err.value.condition == "malformed-request"


def test_authzid_may_only_name_the_user_itself() -> None:
    server = SaslServer("SCRAM-SHA-256", tls=True, channel_binding=bindings, domain=DOMAIN)
    assert isinstance(server.start(f"n,a=alice@{DOMAIN},n=alice,r=1".encode()), NeedCredentials)
    other = SaslServer("SCRAM-SHA-256", tls=True, channel_binding=bindings, domain=DOMAIN)
    with pytest.raises(SaslFailure) as err:
        other.start(f"n,a=bob@{DOMAIN},n=alice,r=1".encode())
    assert err.value.condition == "invalid-authzid"


def test_plain_only_over_tls() -> None:
    client = SaslClient("alice", "pencil", ["PLAIN"], allow_plain=True)
    assert exchange(client).username == "alice"
    with pytest.raises(SaslFailure) as err:
        exchange(SaslClient("alice", "pencil", ["PLAIN"], allow_plain=True), tls=False)
    assert err.value.condition == "encryption-required"
    assert "PLAIN" not in server_mechanisms(False, [])
    with pytest.raises(SaslFailure) as wrong:
        exchange(SaslClient("alice", "nope", ["PLAIN"], allow_plain=True))
    assert wrong.value.condition == "not-authorized"


def test_plain_malformed() -> None:
    server = SaslServer("PLAIN", tls=True, channel_binding=bindings, domain=DOMAIN)
    with pytest.raises(SaslFailure) as err:
        server.start(b"only-one-part")
    assert err.value.condition == "malformed-request"


def test_no_initial_response_gets_an_empty_challenge() -> None:
    server = SaslServer("SCRAM-SHA-1", tls=False, channel_binding=no_bindings, domain=DOMAIN)
    assert server.start(None) == Challenge(b"")


def test_base64_payloads() -> None:
    """RFC 6120 §6.4.2: '=' is an empty payload; anything not base64 is incorrect-encoding."""
    assert decode_b64("=") == b""
    assert encode_b64(b"") == "="
    assert decode_b64(encode_b64(b"\0binary\xff")) == b"\0binary\xff"
    with pytest.raises(SaslFailure) as err:
        decode_b64("not base64!")
    assert err.value.condition == "incorrect-encoding"


def test_credentials_never_hold_the_password() -> None:
    creds = derive_credentials("pencil")
    assert set(creds) == {"SHA-1", "SHA-256"}
    assert creds["SHA-1"].salt != creds["SHA-256"].salt
    for cred in creds.values():
        assert b"pencil" not in cred.salt + cred.stored_key + cred.server_key


@pytest.mark.parametrize(
    ("mechanism", "nonce", "server_first", "client_final", "server_final"),
    [
        (  # RFC 5802 §5
            "SCRAM-SHA-1", "fyko+d2lbbFgONRv9qkxdawL",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        ),
        (  # RFC 7677 §3
            "SCRAM-SHA-256", "rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
            "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        ),
    ],
)
def test_rfc_test_vectors(mechanism: str, nonce: str, server_first: str, client_final: str, server_final: str) -> None:
    """Both sides reproduce the exchanges printed in the RFCs (user 'user', password 'pencil')."""
    client = SaslClient("user", "pencil", [mechanism], nonce=nonce)
    assert client.initial() == f"n,,n=user,r={nonce}".encode()
    assert client.respond(server_first.encode()) == client_final.encode()
    client.success(server_final.encode())

    fields = dict(part.split("=", 1) for part in server_first.split(","))
    hash_name = mechanism.removeprefix("SCRAM-")
    server_nonce = fields["r"].removeprefix(nonce)
    salt, iterations = base64.b64decode(fields["s"]), int(fields["i"])
    _, stored, key, _ = scramp.ScramMechanism(mechanism).make_auth_info("pencil", iteration_count=iterations, salt=salt)
    server = SaslServer(mechanism, tls=False, channel_binding=no_bindings, domain=DOMAIN, nonce=server_nonce)
    assert isinstance(server.start(client.initial()), NeedCredentials)
    challenge = server.provide_credentials({hash_name: ScramCredential(salt, iterations, stored, key)})
    assert challenge == Challenge(server_first.encode())
    assert server.respond(client_final.encode()) == Success(server_final.encode(), "user")


def test_client_sends_y_when_it_could_bind_but_plus_is_not_offered() -> None:
    client = SaslClient("alice", "pencil", ["SCRAM-SHA-256"], channel_binding=("tls-exporter", EXPORTER))
    assert client.initial().startswith(b"y,,")
    assert exchange(client, binding=no_bindings).username == "alice"


@pytest.mark.parametrize(
    "server_first",
    [b"r=other,s=QSXCR+Q6sek8bf92,i=4096", b"r=abcXYZ,s=QSXCR+Q6sek8bf92,i=1", b"r=abcXYZ,s=!!,i=4096",
     b"r=abcXYZ,i=4096", b"e=other-error", b"\xff", b"r=abcXYZ,s=QSXCR+Q6sek8bf92,i=99999999999"],
)
def test_client_refuses_bad_server_first(server_first: bytes) -> None:
    client = SaslClient("alice", "pencil", ["SCRAM-SHA-1"], nonce="abc")
    with pytest.raises(SaslFailure):
        client.respond(server_first)


@pytest.mark.parametrize("final", [b"c=biws,r=x", b"p=AAAA", b"c=biws,r=WRONG,p=AAAA", b"\xff\xfe", b"c=bad,r=x,p=AAAA"])
def test_server_refuses_bad_client_final(final: bytes) -> None:
    client = SaslClient("alice", "pencil", ["SCRAM-SHA-256"])
    server = SaslServer("SCRAM-SHA-256", tls=False, channel_binding=no_bindings, domain=DOMAIN)
    step = server.start(client.initial())
    assert isinstance(step, NeedCredentials)
    assert isinstance(server.provide_credentials(CREDS["alice"]), Challenge)
    with pytest.raises(SaslFailure) as err:
        server.respond(final)
    assert err.value.condition in ("malformed-request", "not-authorized")


def test_usernames_with_reserved_characters_are_escaped() -> None:
    creds = {"a,b=c": derive_credentials("pw")}
    client = SaslClient("a,b=c", "pw", ["SCRAM-SHA-256"])
    assert b"n=a=2Cb=3Dc," in client.initial()
    assert exchange(client, creds=creds).username == "a,b=c"
