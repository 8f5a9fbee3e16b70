"""The local admin channel: a Unix socket in the data directory, one JSON request per line.

``schnack admin`` commands that need the running server (such as listing sessions) talk to it
here; commands on stored data (users) go to storage directly, so they work with the server down.
Only the owner of the data directory can reach the socket (mode 0600).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..xmpp.errors import StreamError
from ..xmpp.jid import JID, JIDError

if TYPE_CHECKING:
    from .app import Server

log = logging.getLogger(__name__)

SOCKET_NAME = "admin.sock"


class AdminError(Exception):
    """A request the server refused, or could not be reached for."""


def _sessions(server: Server) -> list[dict[str, Any]]:
    return [
        {
            "jid": str(s.jid),
            "peer": s.peer,
            "secure": s.secure,
            "available": s.available,
            "priority": s.priority,
        }
        for s in server.sessions
    ]


async def _handle(server: Server, request: dict[str, Any]) -> dict[str, Any]:
    command = request.get("command")
    if command == "sessions":
        return {"ok": True, "sessions": _sessions(server)}
    if command == "cluster":
        nodes = await server.cluster.bus.nodes()
        return {
            "ok": True,
            "node": server.cluster.name,
            "nodes": [{"name": n.name, "sessions": n.sessions, "components": n.components, "started": n.started}
                      for n in nodes.values()],
        }
    if command == "drain":
        if server.draining:
            return {"ok": False, "error": "this node is draining already"}
        done = await server.drain()
        return {"ok": True, "node": server.cluster.name, "redirected": done.redirected,
                "shut_down": done.shut_down, "targets": done.targets}
    if command == "delete-user":
        return await _delete_user(server, str(request.get("jid", "")))
    if command == "kick":
        try:
            target = JID.parse(str(request.get("jid", "")))
        except JIDError as err:
            return {"ok": False, "error": f"invalid JID: {err}"}
        closed = 0
        for session in server.sessions.resources(target.bare):
            if target.resource is None or session.jid == target:
                session.close(StreamError("policy-violation", "disconnected by the administrator"))
                closed += 1
        return {"ok": True, "closed": closed}
    # Modules serve their own commands on the event ``admin/{command}`` (e.g. uploads).
    reply: dict[str, Any] | None = await server.hooks.fire(f"admin/{command}", request)
    if reply is not None:
        return reply
    return {"ok": False, "error": f"unknown command {command!r}"}


async def _delete_user(server: Server, jid: str) -> dict[str, Any]:
    """Delete an account through the running server, so contacts and sessions hear of it."""
    try:
        account = JID.parse(jid)
    except JIDError as err:
        return {"ok": False, "error": f"invalid JID: {err}"}
    if account.local is None or account.resource is not None or account.domain not in server.hosts:
        return {"ok": False, "error": f"{jid!r} is not an account of this server"}
    try:
        deleted = await server.delete_account(account.domain, account.local)
    except Exception:
        if await server.storage.accounts.get(account.domain, account.local) is not None:
            log.exception("could not delete the account %s", account)
            return {"ok": False, "error": f"{account} was not deleted; the server's log says why"}
        # Gone from storage, though a module failed to drop what it keeps elsewhere: its sessions
        # end here too, as the other nodes of a cluster end theirs.
        log.exception("the account %s is deleted, not all that it kept", account)
        deleted = True
    if not deleted:
        return {"ok": False, "error": f"no such account: {account}"}
    server.end_account_sessions(account.domain, account.local)
    return {"ok": True}


class AdminChannel:
    """Serves admin requests on ``data_dir/admin.sock``."""

    def __init__(self, server: Server, path: Path) -> None:
        self.server = server
        self.path = path
        self._srv: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._srv = await asyncio.start_unix_server(self._client, path=str(self.path))
        finally:
            os.umask(old_umask)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                # readline() raises ValueError for a line past the reader's limit: a bad request too.
                line = await asyncio.wait_for(reader.readline(), 10)
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("not an object")
                reply = await _handle(self.server, request)
            except ValueError as err:
                reply = {"ok": False, "error": f"bad request: {err}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
            if reply.get("ok") and request.get("command") == "drain":
                # The reply is out: the process may stop now.
                self.server.drained.set()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        # A server that failed to start never opened the socket: one at the path belongs to a
        # server still running on this data directory, whose admin commands would stop working.
        if self._srv is None:
            return
        self._srv.close()
        await self._srv.wait_closed()
        self._srv = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


async def request(data_dir: Path, command: str, **args: Any) -> dict[str, Any]:
    """Send one request to the server running on ``data_dir``."""
    path = data_dir / SOCKET_NAME
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
    except FileNotFoundError:
        raise AdminError(f"no server is running on {data_dir} (no admin socket at {path})") from None
    except ConnectionRefusedError:
        # A killed server leaves its socket behind.
        raise AdminError(f"no server is running on {data_dir} (nothing answers on its admin socket {path})") from None
    except OSError as err:
        # A socket path too long for AF_UNIX, or one this user may not open.
        raise AdminError(f"cannot reach a server on {data_dir} (admin socket {path}): {err.strerror or err}") from None
    try:
        writer.write(json.dumps({"command": command, **args}).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 30)
    except (TimeoutError, ConnectionError, ValueError) as err:
        raise AdminError(f"the server on {data_dir} did not answer: {err or 'timeout'}") from None
    finally:
        writer.close()
    try:
        reply: dict[str, Any] = json.loads(line)
    except ValueError:
        raise AdminError(f"the server on {data_dir} closed the admin connection without an answer") from None
    if not reply.get("ok"):
        raise AdminError(str(reply.get("error", "request failed")))
    return reply
