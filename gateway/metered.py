"""A WebSocket connection that counts its traffic, for metrics (with ``[admin]`` only).

Four plain ``int`` slots per connection, added to where a handler takes a message
(``get_message``) or sends one (``send_message``): no lock, no Prometheus call, no dict.
:class:`gateway.admin.collector.GatewayCollector` sums them over a mount's open connections
when ``/metrics`` is scraped, and :meth:`gateway.mount.Mount.unregister` folds a closed
connection's counts into its mount's totals.  Fan-out (``broadcast``, ``send_to_user``, broker
deliveries) is counted once per fan-out by the mount, not here, so the per-recipient path of a
broadcast pays nothing.  Without ``[admin]`` the gateway uses the plain engine class and pays
nothing at all.

Byte counts are payload bytes (text as UTF-8), not frame headers: ``str.isascii`` is O(1) in
CPython, so only non-ASCII text is encoded to be measured.
"""

from __future__ import annotations

from typing import Any

from gateway.ws.connection import WebSocketConnection


def payload_size(message: str | bytes) -> int:
    """The bytes ``message`` takes on the wire as a payload (UTF-8 for text)."""
    if isinstance(message, str) and not message.isascii():
        return len(message.encode("utf-8", "surrogatepass"))
    return len(message)


class MeteredConnection(WebSocketConnection):
    """:class:`WebSocketConnection` plus what its handler received and sent."""

    __slots__ = ("bytes_in", "bytes_out", "messages_in", "messages_out")

    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages_in = self.messages_out = self.bytes_in = self.bytes_out = 0

    async def get_message(self) -> str | bytes:
        message = await super().get_message()
        self.messages_in += 1
        self.bytes_in += payload_size(message)
        return message

    async def send_message(self, message: str | bytes) -> None:
        await super().send_message(message)
        self.messages_out += 1
        self.bytes_out += payload_size(message)


def metered(ws: WebSocketConnection) -> MeteredConnection | None:
    """``ws`` if it counts its traffic."""
    return ws if type(ws) is MeteredConnection else None
