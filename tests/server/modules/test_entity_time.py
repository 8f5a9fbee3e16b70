"""XEP-0202: the server tells its time, in UTC, to its users."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from schnack.server.app import Server
from schnack.xmpp.payloads.entity_time import TIME, EntityTime

from ...harness import add_user, connect, running
from .test_disco import INFO, ask, disco, info_of


async def test_the_server_tells_its_time(server: Server) -> None:
    before = datetime.now(UTC)
    reply = await ask(server, "<iq type='get' id='t' to='localhost'><time xmlns='urn:xmpp:time'/></iq>")
    after = datetime.now(UTC)
    assert reply.get("type") == "result" and reply.get("from") == "localhost"
    payload = reply.find(TIME)
    assert payload is not None
    told = EntityTime.from_xml(payload).when
    assert told.utcoffset() == timedelta()
    # The result is written to the millisecond.
    assert before - timedelta(milliseconds=1) <= told <= after


async def test_disco_names_the_feature(server: Server) -> None:
    assert "urn:xmpp:time" in info_of(await ask(server, disco(INFO.partition("}")[0][1:]))).features


async def test_off_when_disabled(tmp_path: Path) -> None:
    async with running(tmp_path, modules={"disable": ["time"]}) as server:
        await add_user(server, "alice")
        client = await connect(server, "alice@localhost/phone")
        await client.send("<iq type='get' id='t' to='localhost'><time xmlns='urn:xmpp:time'/></iq>")
        (reply,) = await client.expect()
        await client.close()
    assert reply.get("type") == "error"
