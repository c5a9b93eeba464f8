"""Which Redis channels this process wants, and which the subscription connection has.

Membership drives it: the first local holder of a target (a group's first member, a mount's
first client, a user's first session) makes its channel *wanted*; the last one leaving makes
it unwanted.  The shell applies the difference (:meth:`Subscriptions.pending`) on its one
subscription connection and reports back (:meth:`subscribed`, :meth:`unsubscribed`); a lost
connection (:meth:`lost`) makes every wanted channel pending again, so a reconnect restores
them all.  Holders may come and go while a SUBSCRIBE or UNSUBSCRIBE is in flight: the next
:meth:`pending` corrects whatever changed.  Pure: no trio, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["m", "g", "u"]


@dataclass(frozen=True, slots=True)
class Route:
    """A broadcast target: a mount (``"m"``), a group (``"g"``) or a user (``"u"``) of a
    mount; ``name`` is the group's or the user's (empty for a mount)."""

    kind: Kind
    mount: str
    name: str = ""


class Subscriptions:
    def __init__(self) -> None:
        self._holders: dict[bytes, int] = {}
        self._routes: dict[bytes, Route] = {}
        self._active: set[bytes] = set()

    def hold(self, channel: bytes, route: Route) -> bool:
        """One more local holder of ``channel``; ``True`` if it was not wanted before."""
        count = self._holders.get(channel, 0)
        self._holders[channel] = count + 1
        if count == 0:
            self._routes[channel] = route
        return count == 0

    def release(self, channel: bytes) -> bool:
        """One holder fewer; ``True`` if that was the last (the channel is unwanted now)."""
        count = self._holders.get(channel, 0)
        if count <= 1:
            self._holders.pop(channel, None)
            self._routes.pop(channel, None)
            return count == 1
        self._holders[channel] = count - 1
        return False

    def holders(self, channel: bytes) -> int:
        return self._holders.get(channel, 0)

    def route(self, channel: bytes) -> Route | None:
        """Where a message on ``channel`` goes, or ``None`` if the channel is not wanted (a
        message that arrives while its UNSUBSCRIBE is in flight is dropped)."""
        return self._routes.get(channel)

    @property
    def wanted(self) -> frozenset[bytes]:
        return frozenset(self._holders)

    @property
    def active(self) -> frozenset[bytes]:
        return frozenset(self._active)

    def pending(self) -> tuple[list[bytes], list[bytes]]:
        """``(to_subscribe, to_unsubscribe)``: what the connection must do to match."""
        subscribe = [c for c in self._holders if c not in self._active]
        unsubscribe = [c for c in self._active if c not in self._holders]
        return subscribe, unsubscribe

    @property
    def in_sync(self) -> bool:
        return self._active == self._holders.keys()

    def subscribed(self, channels: list[bytes]) -> None:
        """Redis confirmed these SUBSCRIBEs."""
        self._active.update(channels)

    def unsubscribed(self, channels: list[bytes]) -> None:
        """Redis confirmed these UNSUBSCRIBEs (or the connection no longer has them)."""
        self._active.difference_update(channels)

    def lost(self) -> None:
        """The subscription connection is gone: nothing is subscribed any more."""
        self._active.clear()
