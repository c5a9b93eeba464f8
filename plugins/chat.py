"""``/chat/{room}``: broadcast chat rooms.

Clients send plain text; every client in the same room (not other rooms) receives JSON:
``{"type": "message", "room", "user", "text"}``, plus ``join``/``leave`` notices with the
member count when ``announce`` is on (a ``join`` also says ``max_message_chars``, so a page
can set its input's ``maxlength``).  A sender whose text was cut gets ``{"type": "cut",
"max_message_chars", "dropped"}`` (how many characters were left out) after the message.
With ``[broker]`` a room spans every gateway process:
the member count in the notices is the cluster-wide one, and ``max_members`` applies to the
whole cluster (a join that would pass it is closed with 1013).  Text is cut to
``max_message_chars`` characters (the classic example cut at 50).  A broadcast only queues the
frame on each member, so one slow member never delays the room; it is closed with 1013 if its
queue overflows.

``format = "text"`` is the classic chat server instead (the javascript.info tutorial's Node
``ws`` server, so its client works unchanged): every message goes to the whole room exactly as
received -- text stays text, binary stays binary -- cut to its first ``max_message_chars``
characters (code points: a Python ``str`` never holds half a surrogate pair, and the cut text
is re-encoded whole, so no UTF-8 sequence is split) or, for binary, bytes (as ``Buffer.slice``
does); no notices, no error replies.  A mount without ``{room}`` is one room.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from gateway.api import (
    CloseSession,
    Group,
    Mount,
    Plugin,
    Reject,
    Session,
    UpgradeRequest,
    WebSocketConnection,
)


@dataclass(frozen=True)
class ChatOptions:
    max_message_chars: int = field(default=50, metadata={"min": 1})
    max_members: int = field(default=1000, metadata={"min": 1})
    announce: bool = True  # join/leave notices
    max_room_chars: int = field(default=64, metadata={"min": 1})
    format: Literal["json", "text"] = "json"  # "text": the classic plain relay (module doc)


class Chat(Plugin[ChatOptions]):
    options_type = ChatOptions

    def __init__(self, options: ChatOptions, mount: Mount) -> None:
        super().__init__(options, mount)
        # JSON messages name their room: the mount's path must have one.  The classic text
        # relay does not (a mount without {room} is one room).
        self.path_params = ("room",) if options.format == "json" else ()

    def check(self, request: UpgradeRequest) -> Reject | None:
        room = request.params.get("room", "")
        if len(room) > self.options.max_room_chars:
            return Reject(400, "room name too long")
        # Look the room up without creating it: a handshake that never completes must not
        # leave an empty group behind (a client could grow memory with random room names).
        if len(self.mount.groups.get(room, ())) >= self.options.max_members:
            return Reject(503, "room is full", (("Retry-After", "5"),))
        return None

    async def handle(self, ws: WebSocketConnection, session: Session) -> None:
        if self.options.format == "text":
            await self._relay_text(ws, session)
            return
        room_name = session.params["room"]
        user = _user(session)
        room = self.mount.group(room_name)
        if len(room) >= self.options.max_members:  # filled up since check()
            raise CloseSession(1013, "room is full")
        joined = False
        try:
            with room.join(ws):
                members = await self._admit(room)
                joined = True
                self._notice(room, "join", user, members)
                while True:
                    message = await ws.get_message()
                    if not isinstance(message, str):
                        await ws.send_message(json.dumps({"type": "error", "text": "text only"}))
                        continue
                    limit = self.options.max_message_chars
                    text = message[:limit]
                    room.broadcast(
                        json.dumps(
                            {"type": "message", "room": room_name, "user": user, "text": text}
                        )
                    )
                    if len(message) > limit:  # say so to the sender only
                        dropped = len(message) - limit
                        cut = {"type": "cut", "max_message_chars": limit, "dropped": dropped}
                        await ws.send_message(json.dumps(cut))
        finally:
            # Counted after leaving, in every process (this also takes back the place a
            # refused join had counted); sent to whoever is in the room now (the group object
            # is new if the room emptied here and filled again).
            members = await room.cluster_count()
            if joined and self.options.announce and members > 0:
                current = self.mount.groups.get(room_name, room)
                self._notice(current, "leave", user, members)

    async def _admit(self, room: Group) -> int:
        """The room's cluster-wide count with this member in it (awaited: it also waits until
        this process hears the room's messages); 1013 if that is over ``max_members``.  Each
        process writes its own count before adding up, so two joins racing on two processes
        can both be refused, never both admitted past the limit."""
        members = await room.cluster_count()
        if members > self.options.max_members:
            raise CloseSession(1013, "room is full")
        return members

    async def _relay_text(self, ws: WebSocketConnection, session: Session) -> None:
        """``format = "text"``: broadcast each message as received, cut, with no notices."""
        room = self.mount.group(session.params.get("room", ""))
        if len(room) >= self.options.max_members:  # filled up since check()
            raise CloseSession(1013, "room is full")
        limit = self.options.max_message_chars
        try:
            with room.join(ws):
                await self._admit(room)
                while True:
                    message = await ws.get_message()
                    # str: code points; bytes: bytes.  The sender gets its own message too.
                    room.broadcast(message[:limit])
        finally:
            await room.cluster_count()  # this process's count, written back after leaving

    def _notice(self, room: Group, kind: str, user: str, members: int) -> None:
        if self.options.announce:
            notice: dict[str, object] = {
                "type": kind,
                "room": room.name,
                "user": user,
                "members": members,
            }
            if kind == "join":
                notice["max_message_chars"] = self.options.max_message_chars
            room.broadcast(json.dumps(notice))


def _user(session: Session) -> str:
    """The authenticated user if any, else a short name derived from the session id."""
    principal = session.principal
    user = getattr(principal, "user", None) or (principal if isinstance(principal, str) else None)
    return str(user) if user else f"guest-{session.id[:4]}"
