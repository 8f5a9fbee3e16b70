"""Phone sign-up (docs/phone.md) in a cluster of real processes: a node killed while it uses a
code to change the number's account does not keep the code from the app's retry on another node,
nor the retry from the answer the killed node would have given.

Two ``schnack serve`` processes on the local PostgreSQL and Redis. The request that uses a code
claims its use in storage; the claim names the node and when it started, so that the claim of a
node the cluster knows to be dead (its heartbeat is gone) is taken over by the retry, while that
of a live node still makes the retry wait (503).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from ..conftest import require_service
from ..server.cluster.conftest import REDIS_URL, eventually, redis_available
from ..server.sms_receiver import Webhook, webhook
from ..server.storage.conftest import postgres_schema
from .cluster_harness import Node, clear_prefix
from .test_cluster_upload import dead

NUMBER = "+4915123456789"
PASSWORD = "a long random password"
APP = {"Installation-Id": str(uuid.uuid4())}


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path, options: str) -> AsyncIterator[tuple[Node, Node, str, Webhook, str,
                                                                          asyncpg.Connection]]:
    """Nodes a and b with HTTP listeners and the phone module (with more ``options``, TOML)
    sending SMS to a webhook; the prefix of the cluster's keys in Redis, the webhook, and the
    schema with an administrative connection."""
    reason = await redis_available(REDIS_URL)
    require_service(reason is None, f"Redis not reachable at {REDIS_URL}: {reason}")
    prefix = f"schnack-phone-{secrets.token_hex(4)}:"
    async with webhook() as hook, postgres_schema() as (storage_url, schema, admin):
        extra = f'[modules]\nenable = ["phone"]\n[modules.phone]\nsms = "http"\nsms_url = "{hook.url}"\n{options}'
        a, b = (Node(tmp_path, name, storage_url, REDIS_URL, prefix, http=True, extra=extra) for name in ("a", "b"))
        try:
            await a.start()
            await b.start()
            yield a, b, prefix, hook, schema, admin
        finally:
            await a.stop()
            await b.stop()
            await clear_prefix(REDIS_URL, prefix)


def url(node: Node, path: str) -> str:
    return f"http://127.0.0.1:{node.http_port}/phone/{path}"


async def ask_code(http: aiohttp.ClientSession, node: Node, hook: Webhook) -> str:
    """A code for the number, sent through ``node``: its digits, as the SMS had them."""
    async with http.get(url(node, f"authentication/{NUMBER.replace('+', '%2B')}"), headers=APP) as answer:
        assert answer.status == 200, await answer.text()
    found = re.match(r"([0-9]{6}) ", hook.received[-1].json["text"])
    assert found is not None
    return found[1]


async def set_password(http: aiohttp.ClientSession, node: Node, code: str, password: str = PASSWORD) -> tuple[int, str]:
    authorization = base64.b64encode(f"{NUMBER}\0{code}".encode()).decode()
    async with http.post(url(node, "password"), data=password.encode(),
                         headers={**APP, "Authorization": authorization}) as answer:
        return answer.status, await answer.text()


async def blocked(admin: asyncpg.Connection) -> list[int]:
    """The PostgreSQL backends waiting for a lock that ``admin`` holds."""
    return [row["pid"] for row in await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))")]


@pytest.mark.parametrize("attempts", [3, 1])
async def test_a_retry_after_the_node_changing_the_account_was_killed_goes_through(tmp_path: Path,
                                                                                   attempts: int) -> None:
    """Also when the killed node's try was the last one allowed: that try decided nothing."""
    async with two_nodes(tmp_path, f"code_attempts = {attempts}\n") as (a, b, prefix, hook, schema, admin), aiohttp.ClientSession() as http:
        code = await ask_code(http, a, hook)
        async with admin.transaction():
            # Node a makes the account behind a lock on the accounts table, and is killed at it.
            await admin.execute(f'LOCK TABLE "{schema}".accounts IN ACCESS EXCLUSIVE MODE')
            first = asyncio.create_task(set_password(http, a, code))
            waiting = await eventually(lambda: blocked(admin), bool, timeout=30)
            # Node a lives and is at it: the retry on node b waits for it, and when that takes
            # too long is told to come again, spending no try (with one allowed, node a's try
            # holds the only place) and leaving the code valid.
            assert (await set_password(http, b, code))[0] == 503
            await a.kill()
            with pytest.raises(aiohttp.ClientError):
                await first
            # The dead node's connection is cut, as PostgreSQL cuts it once it notices: its
            # change of the account is never made.
            for pid in waiting:
                await admin.execute("SELECT pg_terminate_backend($1)", pid)
        await dead(prefix, a)
        assert await set_password(http, b, code) == (201, "the account was created\n")
        # The retry's answer was lost: the same request is answered alike.
        assert await set_password(http, b, code) == (201, "the account was created\n")


@pytest.mark.parametrize("account", ["new", "existing"])
async def test_a_retry_after_the_node_was_killed_before_answering_gets_its_answer(tmp_path: Path,
                                                                                 account: str) -> None:
    """Node a made the change of the account (created it, or gave the existing one the new
    phone's password) and is killed before it marks the number verified and answers: the app's
    retry on node b finishes the change and is answered as node a would have, 201 for an account
    node a created, so that the app sets the new account up (its keys, its roster), and 200 for
    one it re-keyed."""
    async with two_nodes(tmp_path, "sms_interval = 0\n") as (a, b, prefix, hook, schema, admin), aiohttp.ClientSession() as http:
        password = PASSWORD
        if account == "existing":
            assert (await set_password(http, a, await ask_code(http, a, hook)))[0] == 201
            password = "the new phone's password"
        code = await ask_code(http, a, hook)
        # Node a's mark that the number is verified, which comes after the change, waits for this
        # transaction, which writes the same row (or holds the one there) and is undone.
        held = admin.transaction()
        await held.start()
        try:
            # The schema's triggers name its tables unqualified.
            await admin.execute(f'SET LOCAL search_path TO "{schema}"')
            await admin.execute('INSERT INTO kv VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING',
                                "localhost", NUMBER, "phone", b"{}")
            await admin.execute('SELECT 1 FROM kv WHERE host = $1 AND username = $2 AND store = $3 '
                                "FOR UPDATE", "localhost", NUMBER, "phone")
            first = asyncio.create_task(set_password(http, a, code, password))
            waiting = await eventually(lambda: blocked(admin), bool, timeout=30)
            await a.kill()
            with pytest.raises(aiohttp.ClientError):
                await first
            for pid in waiting:
                await admin.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await held.rollback()
        await dead(prefix, a)
        answer = (201, "the account was created\n") if account == "new" else (200, "the password was changed\n")
        assert await set_password(http, b, code, password) == answer
        assert await set_password(http, b, code, password) == answer
        assert await admin.fetchval(f'SELECT count(*) FROM "{schema}".kv WHERE host = $1 AND username = $2 '
                                    "AND store = $3", "localhost", NUMBER, "phone") == 1
