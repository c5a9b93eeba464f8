"""Test-only plugins for ``serve --workers N`` (mounted by the tests' configs by dotted path):
sessions that say which worker process serves them, and a worker that cannot start."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from gateway.api import Plugin, Session, WebSocketConnection
from plugins.chat import Chat


async def whoami(ws: WebSocketConnection, session: Session) -> None:
    """Sends the serving process's pid, then echoes."""
    await ws.send_message(str(os.getpid()))
    while True:
        await ws.send_message(await ws.get_message())


class PidChat(Chat):
    """The chat plugin, but a session's first message is ``{"type": "pid", "pid": N}``."""

    async def handle(self, ws: WebSocketConnection, session: Session) -> None:
        await ws.send_message(json.dumps({"type": "pid", "pid": os.getpid()}))
        await super().handle(ws, session)


@dataclass(frozen=True)
class CrashOptions:
    status: int = 3


class CrashOnStart(Plugin[CrashOptions]):
    """A plugin whose lifespan kills its process at once: every worker dies as it starts
    (the supervisor only builds the app, it never enters lifespans, so it survives)."""

    options_type = CrashOptions

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        os._exit(self.options.status)
        yield  # pragma: no cover
