"""``schnack admin room``: the server's operators list, inspect, change and destroy rooms.

A room whose owners are all gone (the last owner's account was deleted and nobody was left to
pass it to, see :func:`.admin.heirs`) can be configured or destroyed by no user; the operator
still can. The changes take the owners' own paths, under the room's lock as a stanza to the
room would: an affiliation is set as an owner's request sets it (§9.1 to §9.4, §10.3 to §10.7,
:meth:`.admin.Admin.by_operator`), occupants told by presence, the room kept with an owner
(§10.6); destruction is an owner's (§10.9, :meth:`.owner.Owner.destroy`).

In a cluster a room lives on one node (``server/cluster/groups.py``), which alone changes it and
alone knows its occupants. The node asked shows and changes the rooms it serves (claiming one no
node serves yet, as a stanza to it would); a command for a room another node serves it forwards
there over the bus (:meth:`~...cluster.node.ClusterNode.ask`, topic ``rooms``) and answers with
that node's reply, or, when none comes within :data:`FORWARD_TIMEOUT`, with an error naming the
node. A forwarded command is never forwarded again: the room may have moved on meanwhile (its node
drained), and is then refused. A listing reads storage, which all nodes share, and asks every live
node for the rooms it holds in memory, with their occupants (a temporary room is nowhere else);
a node that does not answer within :data:`GATHER_TIMEOUT` is named in the listing, and the
occupants of the stored rooms it may serve are unknown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ....xmpp.errors import StanzaError
from ....xmpp.jid import JID, JIDError
from ....xmpp.payloads.muc import Destroy
from ...cluster.bus import BusUnavailable, NoAnswer
from .room import AFFILIATION_RANK, Room, RoomState

if TYPE_CHECKING:
    from . import Muc

Reply = dict[str, Any]

# The bus topic of the commands forwarded to the node that serves the room.
TOPIC = "rooms"
# How long the node asked waits for the room's node to carry out a command (a room destroyed
# deletes its archive) before it tells the operator that it did not answer.
FORWARD_TIMEOUT = 15.0
# How long a listing waits for every other node's rooms.
GATHER_TIMEOUT = 3.0


def _refused(error: str) -> Reply:
    return {"ok": False, "error": error}


class Operator:
    """The ``rooms`` admin command (``admin/rooms``): the actions list, show, set-affiliation, destroy;
    and ``served``, the rooms in memory, which only other nodes ask for (see :meth:`listing`)."""

    def __init__(self, muc: Muc) -> None:
        self.muc = muc
        muc.server.cluster.serve(TOPIC, self.forwarded)

    async def handle(self, request: dict[str, Any]) -> Reply:
        """A command from the admin channel: carried out here, or where the room is served."""
        return await self._handle(request, forward=True)

    async def forwarded(self, request: dict[str, Any]) -> Reply:
        """A command another node forwarded here, taking this node for the room's."""
        return await self._handle(request, forward=False)

    async def _handle(self, request: dict[str, Any], *, forward: bool) -> Reply:
        action = request.get("action")
        if action == "list":
            return await self.listing(request.get("domain"))
        if action == "served" and not forward:
            return {"ok": True, "rooms": self._served(request.get("services"))}
        if action not in ("show", "set-affiliation", "destroy"):
            return _refused(f"unknown rooms action {action!r}")
        room_jid = self._room_jid(request.get("room"))
        if isinstance(room_jid, str):
            return _refused(room_jid)
        reason = request.get("reason")
        if reason is not None and not isinstance(reason, str):
            return _refused("the reason must be text")
        change = self._change(request.get("jid"), request.get("affiliation")) if action == "set-affiliation" else None
        if isinstance(change, str):
            return _refused(change)
        if (elsewhere := await self._elsewhere(request, room_jid, forward=forward)) is not None:
            return elsewhere
        if action == "show":
            return await self.show(room_jid)
        if change is None:
            return await self.destroy(room_jid, reason)
        return await self.set_affiliation(room_jid, *change, reason)

    def _room_jid(self, value: object) -> JID | str:
        """The bare JID of a room of this server's group services, or why ``value`` is none."""
        try:
            jid = JID.parse(str(value or ""))
        except JIDError as err:
            return f"invalid group address {value!r}: {err}"
        if jid.local is None or jid.resource is not None:
            return f"{value!r} is not a group address (name@{next(iter(self.muc.domains), 'groups.example.org')})"
        if jid.domain not in self.muc.domains:
            return f"{jid.domain} is no group service of this server (services: {', '.join(sorted(self.muc.domains))})"
        return jid

    @staticmethod
    def _change(jid: object, affiliation: object) -> tuple[JID, str] | str:
        """The bare JID and the affiliation a set-affiliation command names, or why it names none."""
        try:
            target = JID.parse(str(jid or "")).bare
        except JIDError as err:
            return f"invalid JID {jid!r}: {err}"
        if not isinstance(affiliation, str) or affiliation not in AFFILIATION_RANK:
            return f"unknown affiliation {affiliation!r} (owner, admin, member, outcast or none)"
        return target, affiliation

    def _served(self, services: object) -> list[Reply]:
        """The rooms of ``services`` in this node's memory (those it serves) with their occupants."""
        wanted = services if isinstance(services, list) else []
        return [{"room": str(jid), "name": room.config.name, "occupants": len(room.occupants),
                 "owners": sorted(str(owner) for owner in room.owners())}
                for jid, room in self.muc.rooms.live.items() if jid.domain in wanted and not room.destroyed]

    async def listing(self, domain: object) -> Reply:
        """Every room of the services (of ``domain``, a served domain or its group service):
        those in storage and those in the memory of any node, with their occupants and owners;
        ``unanswered`` says why each node that did not answer gave nothing."""
        services = sorted(self.muc.domains)
        if domain is not None:
            wanted = str(domain).lower()
            services = [s for s in services if wanted in (s, self.muc.domains[s])]
            if not services:
                return _refused(f"this server has no group service for {domain} (services: {', '.join(sorted(self.muc.domains))})")
        live = {row["room"]: row for row in self._served(services)}
        try:
            replies, unanswered = await self.muc.server.cluster.ask_all(
                TOPIC, {"action": "served", "services": services}, GATHER_TIMEOUT)
        except BusUnavailable:
            return _refused("the cluster cannot tell which nodes are live right now; try again")
        for node, reply in replies.items():
            served = reply.get("rooms")
            if not reply.get("ok") or not isinstance(served, list):
                unanswered[node] = f"node {node} gave no rooms: {reply.get('error', 'no listing in its reply')}"
                continue
            for row in served:
                live.setdefault(row["room"], row)
        storage = self.muc.server.storage.muc
        rows: list[Reply] = list(live.values())
        for service in services:
            for stored in await storage.rooms(service):
                jid = JID(stored.name, service)
                if str(jid) in live:
                    continue
                affiliations = await storage.affiliations(service, stored.name)
                owners = sorted(k for k, v in affiliations.items() if v.affiliation == "owner")
                name = RoomState.from_json(stored.config).config.name
                # In no answering node's memory: empty, unless a node that did not answer serves it.
                rows.append({"room": str(jid), "name": name, "occupants": None if unanswered else 0, "owners": owners})
        rows.sort(key=lambda row: row["room"])
        return {"ok": True, "rooms": rows, "unanswered": unanswered}

    async def show(self, room_jid: JID) -> Reply:
        """The room's configuration (§10.2; whether it has a password, never the password),
        affiliations (§5.2) and occupants, as this node, which serves the room, holds them."""
        room = await self.muc.rooms.peek(room_jid)
        if room is None or room.destroyed:
            return _refused(f"no such group: {room_jid}")
        config = room.config
        return {
            "ok": True,
            "room": str(room_jid),
            "config": {
                "name": config.name, "description": config.description, "public": config.public,
                "persistent": config.persistent, "members_only": config.members_only,
                "moderated": config.moderated, "whois": config.whois, "password_protected": bool(config.password),
                "max_users": config.max_users, "allow_invites": config.allow_invites, "logging": config.logging,
            },
            "locked": room.locked,
            "subject": room.state.subject,
            "affiliations": sorted(({"jid": str(jid), "affiliation": record.affiliation, "reason": record.reason}
                                    for jid, record in room.affiliations.items()),
                                   key=lambda row: (-AFFILIATION_RANK[row["affiliation"]], row["jid"])),
            # Serving the room, this node holds every occupant: none when the room is not in memory.
            "occupants": len(room.occupants),
        }

    async def _elsewhere(self, request: dict[str, Any], room_jid: JID, *, forward: bool) -> Reply | None:
        """None when this node serves ``room_jid`` (claiming it when no node does, as a stanza to
        it would: :class:`~...cluster.groups.ClusterGroups`); else the reply of the node that
        serves it, to which ``request`` is forwarded, or why there is none."""
        cluster = self.muc.server.cluster
        if cluster.groups.leaving:
            return _refused("this node is draining and serves no group any more; ask another node")
        try:
            owner = await cluster.groups.owner(room_jid)
        except BusUnavailable:
            return _refused("the cluster cannot tell which node serves the group right now; try again")
        if owner == cluster.name:
            return None
        if not forward:
            return _refused(f"{room_jid} moved to node {owner} while the command was on its way; try again")
        try:
            return await cluster.ask(owner, TOPIC, request, FORWARD_TIMEOUT)
        except NoAnswer as err:
            return _refused(f"{room_jid} is served by node {err.node}, which {err.reason}")

    async def set_affiliation(self, room_jid: JID, target: JID, affiliation: str, reason: str | None) -> Reply:
        """§9.1 to §9.4, §10.3 to §10.7: ``target``'s affiliation changed as by an owner."""

        async def change(room: Room) -> Reply:
            try:
                problems = await self.muc.admin.by_operator(room, target, affiliation, reason)
            except StanzaError as err:
                return _refused(f"{room_jid}: {err.text or err.condition}")
            return {"ok": True, "room": str(room_jid), "jid": str(target), "affiliation": affiliation,
                    "key_problems": {str(k): v for k, v in problems.items()}}

        reply = await self.muc.with_room(room_jid, change)
        return reply if reply is not None else _refused(f"no such group: {room_jid}")

    async def destroy(self, room_jid: JID, reason: str | None) -> Reply:
        """§10.9: the room destroyed as by an owner; its occupants told."""

        async def destroy(room: Room) -> Reply:
            occupants = len(room.occupants)
            await self.muc.owner.destroy(room, Destroy(reason=reason))
            return {"ok": True, "room": str(room_jid), "occupants": occupants}

        reply = await self.muc.with_room(room_jid, destroy)
        return reply if reply is not None else _refused(f"no such group: {room_jid}")
