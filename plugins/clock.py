"""``/clock``: a time server.

On connect it sends ``{"type": "hello", "text": greeting, "interval": seconds}``, then
``{"type": "time", "now": ISO-8601, "epoch": seconds}`` every ``interval`` seconds, and answers
each message it receives with ``{"type": "ack", "received": text}``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import trio

from gateway.api import Plugin, Session, WebSocketConnection


@dataclass(frozen=True)
class ClockOptions:
    interval: float = field(default=1.0, metadata={"min": 0.01})
    greeting: str = "Hello! This is the clock."


class Clock(Plugin[ClockOptions]):
    options_type = ClockOptions

    async def handle(self, ws: WebSocketConnection, session: Session) -> None:
        await ws.send_message(
            json.dumps(
                {"type": "hello", "text": self.options.greeting, "interval": self.options.interval}
            )
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._tick, ws)
            while True:
                message = await ws.get_message()
                text = message if isinstance(message, str) else f"<{len(message)} bytes>"
                await ws.send_message(json.dumps({"type": "ack", "received": text}))

    async def _tick(self, ws: WebSocketConnection) -> None:
        # Sleep to the next multiple of the interval so ticks do not drift with send time.
        interval = self.options.interval
        next_tick = trio.current_time() + interval
        while True:
            await trio.sleep_until(next_tick)
            next_tick += interval
            now = time.time()
            await ws.send_message(
                json.dumps(
                    {
                        "type": "time",
                        "now": datetime.fromtimestamp(now, UTC).isoformat(),
                        "epoch": now,
                    }
                )
            )
