"""What the client keeps between logins (client/fast.py): the user agent, the FAST token as a
secret (a 0600 file where no keyring works) and the SASL2 features, across restarts."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import keyring
import keyring.backends.fail
import pytest

from schnack.client.fast import TOKEN_SECRET, LoginMemory
from schnack.client.store import Store
from schnack.xmpp.jid import JID
from schnack.xmpp.negotiation import ClientStream, FastToken
from schnack.xmpp.xml import element, serialize

ALICE = JID.parse("alice@example.org")


@pytest.fixture(autouse=True)
def no_keyring() -> Iterator[None]:
    """No keyring, as on a headless machine: secrets go to owner-only files."""
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    yield
    keyring.set_keyring(previous)


def after_login(token: FastToken | None, features: str | None) -> ClientStream:
    """A stream as a finished login leaves it."""
    stream = ClientStream(ALICE, "pw")
    stream.token = token
    stream.sasl2_features = element(features) if features else None
    return stream


def test_kept_across_restarts_with_the_token_readable_by_its_owner_only(tmp_path: Path) -> None:
    store = Store(tmp_path)
    memory = LoginMemory(store, ALICE)
    assert memory.token is None and memory.features is None
    agent = memory.user_agent.id
    token = FastToken("t" * 96, "HT-SHA-256-EXPR", datetime.now(UTC) + timedelta(days=1), 3)
    memory.learn(after_login(token, "{http://etherx.jabber.org/streams}features"))
    store.close()
    path = tmp_path / TOKEN_SECRET
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "t" * 96 not in (tmp_path / "store.sqlite").read_bytes().decode("latin-1")
    again = LoginMemory(Store(tmp_path), ALICE)
    assert again.user_agent.id == agent
    assert again.token == token
    assert again.features is not None and serialize(again.features) == serialize(
        element("{http://etherx.jabber.org/streams}features")
    )
    # Each client object has its own tag, so two programs on one store keep apart.
    assert again.tag != memory.tag and (again.tag or "").startswith("schnack.")


def test_a_dropped_token_is_forgotten_and_an_expired_one_not_used(tmp_path: Path) -> None:
    store = Store(tmp_path)
    memory = LoginMemory(store, ALICE)
    memory.learn(after_login(FastToken("x" * 96, "HT-SHA-256-NONE", datetime.now(UTC) - timedelta(seconds=1)), None))
    assert memory.token is None  # expired
    memory.learn(after_login(None, None))
    assert not (tmp_path / TOKEN_SECRET).exists()
    memory.learn(after_login(None, "{http://etherx.jabber.org/streams}features"))
    memory.forget_features()
    assert LoginMemory(store, ALICE).features is None


def test_without_a_directory_everything_stays_in_memory() -> None:
    memory = LoginMemory(Store(None), ALICE, bind2=False)
    assert memory.tag is None
    token = FastToken("m" * 96, "HT-SHA-256-NONE", datetime.now(UTC) + timedelta(days=1))
    memory.learn(after_login(token, None))
    assert memory.token == token
