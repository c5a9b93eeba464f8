"""Per-connection limits of the WebSocket engine (the ``[websocket]`` keys, per mount)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from gateway.ws.parser import ParserLimits


@dataclass(frozen=True)
class Limits:
    """Per-connection limits; see the ``[websocket]`` table in the README."""

    max_message_size: int = 1024 * 1024
    max_fragments: int = 1024
    max_frame_rate: float = 1000.0  # frames/s sustained; 0 disables
    frame_burst: float = 5000.0
    inbound_queue: int = 16
    inbound_queue_bytes: int = 1024 * 1024  # received messages waiting, in bytes held
    outbound_queue_bytes: int = 1024 * 1024
    max_inflate_rate: float = 1024 * 1024  # bytes inflated per second (compression); 0 disables
    close_timeout: float = 10.0
    ping_interval: float = 20.0  # 0 disables keepalive
    ping_timeout: float = 20.0

    @property
    def inflate_burst(self) -> float:
        """The inflate budget's bucket: five seconds' worth, and never less than one message
        (so the largest message allowed can always get through a rested bucket)."""
        return max(self.max_inflate_rate * 5, float(self.max_message_size))

    @cached_property
    def parser(self) -> ParserLimits:
        """The parser's share, built once (a mount's connections share one :class:`Limits`)."""
        return ParserLimits(
            self.max_message_size, self.max_fragments, self.max_frame_rate, self.frame_burst
        )
