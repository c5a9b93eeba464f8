"""Test-only plugins for :mod:`gateway.ws.stream`.

``hand_out`` gives the server-side connection of ``/path?token=T`` to the test that calls
:func:`claim` with ``T`` and then stays alive (the gateway closes a connection when its handler
returns) until the gateway shuts down.  ``upper`` is the module docstring's line protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import trio

from gateway.api import Session, WebSocketConnection
from gateway.ws.stream import WebSocketStream


@dataclass
class _Slot:
    arrived: trio.Event = field(default_factory=trio.Event)
    ws: WebSocketConnection | None = None


_slots: dict[str, _Slot] = {}


async def hand_out(ws: WebSocketConnection, session: Session) -> None:
    slot = _slots.setdefault(session.query_params["token"][0], _Slot())
    slot.ws = ws
    slot.arrived.set()
    await trio.sleep_forever()


async def claim(token: str) -> WebSocketConnection:
    """The server-side connection of the client that connected with ``?token=token``."""
    slot = _slots.setdefault(token, _Slot())
    with trio.fail_after(10):
        await slot.arrived.wait()
    del _slots[token]
    assert slot.ws is not None
    return slot.ws


async def upper(ws: WebSocketConnection, session: Session) -> None:
    """Uppercase each ``\\n``-terminated line; ``?text=accept`` takes text messages too."""
    accept = session.query_params.get("text") == ["accept"]
    text: Literal["accept", "reject"] = "accept" if accept else "reject"
    stream = WebSocketStream(ws, text=text)
    buffer = b""
    try:
        while data := await stream.receive_some():
            *lines, buffer = (buffer + data).split(b"\n")
            for line in lines:
                await stream.send_all(line.upper() + b"\n")
    except trio.BrokenResourceError:
        return  # the stream already closed the WebSocket (1003) or the client went away
