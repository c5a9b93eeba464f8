"""A WebSocket client peer for engine tests: wsproto's frame layer over a trio stream.

It is independent of the gateway's own frame encoder, so what the engine writes is parsed by
someone else's code.  ``raw()`` sends hand-made bytes (:mod:`tests.support.ws_frames`) for
malformed-frame cases.
"""

from __future__ import annotations

from collections import deque

import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Message, TextMessage

__all__ = ["Peer"]


class Peer:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = Connection(ConnectionType.CLIENT)
        self.pending: deque[Event] = deque()
        self.eof = False

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def next_event(self, timeout: float = 5.0) -> Event:
        """The next event the server's bytes produce; CloseConnection(1006) at EOF."""
        with trio.fail_after(timeout):
            while not self.pending:
                self.pending.extend(self.ws.events())
                if self.pending:
                    break
                if self.eof:
                    raise AssertionError("server closed the stream; no more events")
                data = await self.stream.receive_some(65536)
                if not data:
                    self.eof = True
                    self.ws.receive_data(None)
                else:
                    self.ws.receive_data(bytes(data))
        return self.pending.popleft()

    async def message(self) -> str | bytes:
        """The next whole message (fragments joined)."""
        parts: list[str | bytes] = []
        while True:
            event = await self.next_event()
            assert isinstance(event, Message), event
            parts.append(bytes(event.data) if isinstance(event, BytesMessage) else event.data)
            if event.message_finished:
                break
        if isinstance(event, TextMessage):
            return "".join(p for p in parts if isinstance(p, str))
        return b"".join(p for p in parts if isinstance(p, bytes))

    async def close_event(self) -> CloseConnection:
        """Skip messages until the server's Close frame arrives."""
        while True:
            event = await self.next_event()
            if isinstance(event, CloseConnection):
                return event

    async def read_to_eof(self, timeout: float = 5.0) -> bytes:
        out = bytearray()
        with trio.fail_after(timeout):
            while data := await self.stream.receive_some(65536):
                out += data
        return bytes(out)
