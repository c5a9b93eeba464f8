"""``/chat/{room}``: broadcast chat rooms.

Clients send plain text; every client in the same room (not other rooms) receives JSON:
``{"type": "message", "room", "user", "text"}``, plus ``join``/``leave`` notices with the
member count when ``announce`` is on.  Text is cut to ``max_message_chars`` characters (the
classic example cut at 50).  A broadcast only queues the frame on each member, so one slow
member never delays the room; it is closed with 1013 if its queue overflows.

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

from gateway.api import CloseSession, Plugin, Reject, Session, UpgradeRequest, WebSocketConnection


@dataclass(frozen=True)
class ChatOptions:
    max_message_chars: int = field(default=50, metadata={"min": 1})
    max_members: int = field(default=1000, metadata={"min": 1})
    announce: bool = True  # join/leave notices
    max_room_chars: int = field(default=64, metadata={"min": 1})
    format: Literal["json", "text"] = "json"  # "text": the classic plain relay (module doc)


class Chat(Plugin[ChatOptions]):
    options_type = ChatOptions

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
        with room.join(ws):
            self._notice(room_name, "join", user)
            try:
                while True:
                    message = await ws.get_message()
                    if not isinstance(message, str):
                        await ws.send_message(json.dumps({"type": "error", "text": "text only"}))
                        continue
                    text = message[: self.options.max_message_chars]
                    room.broadcast(
                        json.dumps(
                            {"type": "message", "room": room_name, "user": user, "text": text}
                        )
                    )
            finally:
                room_after = len(room) - 1
                if self.options.announce and room_after > 0:
                    room.broadcast(
                        json.dumps(
                            {
                                "type": "leave",
                                "room": room_name,
                                "user": user,
                                "members": room_after,
                            }
                        ),
                        exclude=ws,
                    )

    async def _relay_text(self, ws: WebSocketConnection, session: Session) -> None:
        """``format = "text"``: broadcast each message as received, cut, with no notices."""
        room = self.mount.group(session.params.get("room", ""))
        if len(room) >= self.options.max_members:  # filled up since check()
            raise CloseSession(1013, "room is full")
        limit = self.options.max_message_chars
        with room.join(ws):
            while True:
                message = await ws.get_message()
                # str: code points; bytes: bytes.  The sender gets its own message too.
                room.broadcast(message[:limit])

    def _notice(self, room_name: str, kind: str, user: str) -> None:
        if self.options.announce:
            room = self.mount.group(room_name)
            room.broadcast(
                json.dumps({"type": kind, "room": room_name, "user": user, "members": len(room)})
            )


def _user(session: Session) -> str:
    """The authenticated user if any, else a short name derived from the session id."""
    principal = session.principal
    user = getattr(principal, "user", None) or (principal if isinstance(principal, str) else None)
    return str(user) if user else f"guest-{session.id[:4]}"
