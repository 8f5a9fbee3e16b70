"""``schnack admin check`` as a real process against the real server on real sockets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schnack.client.compliance import CHECKS
from schnack.server.app import Server

from ..client.deployment import PASSWORD, deployment
from .proc import client_env, schnack


@pytest.fixture
async def deployed(tmp_path: Path) -> AsyncIterator[Server]:
    async with deployment(tmp_path) as server:
        yield server


def arguments(server: Server, tmp_path: Path, first_password: str = PASSWORD, *, files: bool = True) -> list[str]:
    """The command line against ``server``; the passwords in files unless ``files`` is False."""
    host, port = server.bound["c2s"][0]
    tls_host, tls_port = server.bound["c2s_tls"][0]
    args = ["admin", "check", "--jid", "alice@localhost", "--jid2", "bob@localhost", "--server", f"{host}:{port}",
            "--direct-tls", f"{tls_host}:{tls_port}", "--ca", str(server.tls.cert_path)]
    if files:
        (tmp_path / "first").write_text(first_password + "\n")
        (tmp_path / "second").write_text(PASSWORD + "\n")
        args += ["--password-file", str(tmp_path / "first"), "--password2-file", str(tmp_path / "second")]
    return args


async def test_check_prints_the_table_and_exits_0(deployed: Server, tmp_path: Path) -> None:
    done = await schnack(client_env(tmp_path), *arguments(deployed, tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["SPECIFICATION", "CHECK", "RESULT", "REASON"]
    rows = [line for line in lines[1:] if line.startswith("XEP-") or line.startswith("RFC ")]
    assert len(rows) == len(CHECKS)
    for check, row in zip(CHECKS, rows, strict=True):
        assert row.startswith(check.spec) and check.name in row and " PASSED " in row
    assert lines[-1] == f"{len(CHECKS)} passed, 0 failed, 0 skipped"


async def test_check_as_json_with_the_passwords_from_the_environment(deployed: Server, tmp_path: Path) -> None:
    args = arguments(deployed, tmp_path, files=False)
    env = client_env(tmp_path, SCHNACK_PASSWORD=PASSWORD, SCHNACK_PASSWORD2=PASSWORD)
    done = await schnack(env, *args, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert (report["passed"], report["failed"], report["skipped"]) == (len(CHECKS), 0, 0)
    assert [c["spec"] for c in report["checks"]] == [c.spec for c in CHECKS]


async def test_a_failing_check_exits_1_with_its_reason(tmp_path: Path) -> None:
    async with deployment(tmp_path, disable=["mam"]) as server:
        done = await schnack(client_env(tmp_path), *arguments(server, tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("XEP-0313 §4 "))
    assert "FAILED" in row and "the account does not announce urn:xmpp:mam:2" in row
    assert done.stdout.splitlines()[-1] == f"{len(CHECKS) - 1} passed, 1 failed, 0 skipped"


async def test_login_failures_exit_2_with_one_line(deployed: Server, tmp_path: Path) -> None:
    done = await schnack(client_env(tmp_path), *arguments(deployed, tmp_path, first_password="wrong"))
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("schnack: cannot log in: alice@localhost")
    # The server's self-signed certificate, not trusted without --ca: the way out is named.
    untrusted = arguments(deployed, tmp_path)
    ca = untrusted.index("--ca")
    del untrusted[ca:ca + 2]
    done = await schnack(client_env(tmp_path), *untrusted)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("schnack: cannot log in: the certificate of localhost is not trusted")
    assert "--insecure-tls" in done.stderr and "--ca FILE" in done.stderr and len(done.stderr.splitlines()) == 1


async def test_a_port_in_other_digits_is_a_usage_error(tmp_path: Path) -> None:
    done = await schnack(client_env(tmp_path, SCHNACK_PASSWORD="secret", SCHNACK_PASSWORD2="secret"), "admin", "check", "--jid", "alice@localhost",
                         "--jid2", "bob@localhost", "--server", "localhost:\u00b2")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == "schnack: --server: expected HOST:PORT, got 'localhost:\u00b2'"


async def test_missing_password_is_a_usage_error(tmp_path: Path) -> None:
    done = await schnack(client_env(tmp_path), "admin", "check", "--jid", "alice@localhost", "--jid2", "bob@localhost")
    assert done.returncode == 2
    assert done.stderr.strip() == "schnack: give the password with --password-file FILE or in $SCHNACK_PASSWORD"
