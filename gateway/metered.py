"""What a WebSocket connection received and sent, for metrics and the session's log line.

Four plain ``int`` slots per connection (:class:`gateway.ws.connection.WebSocketConnection`),
added to where a handler takes a message (``get_message``) or sends one (``send_message``):
no lock, no Prometheus call, no dict.
:class:`gateway.admin.collector.GatewayCollector` sums them over a mount's open connections
when ``/metrics`` is scraped, and :meth:`gateway.mount.Mount.unregister` folds a closed
connection's counts into its mount's totals.  Fan-out (``broadcast``, ``send_to_user``, broker
deliveries) is counted once per fan-out by the mount, not here, so the per-recipient path of a
broadcast pays nothing.

Byte counts are payload bytes (text as UTF-8), not frame headers: ``str.isascii`` is O(1) in
CPython, so only non-ASCII text is encoded to be measured.
"""

from __future__ import annotations

from gateway.ws.connection import WebSocketConnection
from gateway.ws.frames import payload_size

__all__ = ["MeteredConnection", "metered", "payload_size"]


# The engine counts for itself now (four ints per connection, two adds per message): a
# subclass wrapping get_message/send_message cost echo ~12% with [admin] on.
MeteredConnection = WebSocketConnection


def metered(ws: WebSocketConnection) -> WebSocketConnection:
    """``ws``: every connection counts its traffic."""
    return ws
