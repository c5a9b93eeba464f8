"""Test-only plugins for lifespans and the handshake deadline (mounted by dotted path)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from gateway.api import Plugin, Session, UpgradeRequest, WebSocketConnection

EVENTS: list[str] = []


@dataclass(frozen=True)
class TickerOptions:
    interval: float = 1.0


class Ticker(Plugin[TickerOptions]):
    """A lifespan with a background task that broadcasts "tick" to the mount."""

    options_type = TickerOptions

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        EVENTS.append("enter")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._tick)
            yield
            nursery.cancel_scope.cancel()
        EVENTS.append("exit")

    async def _tick(self) -> None:
        n = 0
        while True:
            await trio.sleep(self.options.interval)
            n += 1
            self.mount.broadcast(f"tick {n}")

    async def handle(self, ws: WebSocketConnection, session: Session) -> None:
        EVENTS.append("handle")
        while True:
            await ws.get_message()


async def slow_auth(request: UpgradeRequest) -> str:
    """An authenticator that takes 30 s (an overloaded identity service)."""
    await trio.sleep(30)
    return "late"
