"""``/broadcast``: every message a client sends goes to every client of the mount.

The fan-out benchmark's room (the load generator's ``fanout`` scenario, bench/README.md), and
the smallest example of :meth:`gateway.mount.Mount.broadcast`: the frame is encoded once and
only queued on each connection, so a slow subscriber never delays the others.
"""

from __future__ import annotations

from gateway.api import Session, WebSocketConnection


async def broadcast(ws: WebSocketConnection, session: Session) -> None:
    mount = session.mount
    while True:
        mount.broadcast(await ws.get_message())
