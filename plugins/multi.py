"""``/foo`` and ``/bar``: one plugin class mounted twice with different options.

This is Node ``ws``'s "multiple servers sharing one HTTP server" example: each mount is its own
endpoint with its own client set, and every reply says which mount answered and how many
clients that mount has right now.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from gateway.api import Plugin, Session, WebSocketConnection


@dataclass(frozen=True)
class MultiOptions:
    label: str = ""  # shown in replies; defaults to the mount's name
    greet: bool = True  # send a welcome message on connect


class Multi(Plugin[MultiOptions]):
    options_type = MultiOptions

    def _reply(self, kind: str, **fields: object) -> str:
        return json.dumps(
            {
                "type": kind,
                "mount": self.mount.name,
                "label": self.options.label or self.mount.name,
                "clients": len(self.mount),
                **fields,
            }
        )

    async def handle(self, ws: WebSocketConnection, session: Session) -> None:
        if self.options.greet:
            await ws.send_message(self._reply("welcome", session=session.id))
        while True:
            message = await ws.get_message()
            text = message if isinstance(message, str) else f"<{len(message)} bytes>"
            await ws.send_message(self._reply("reply", message=text))
