"""A mount at run time: one plugin on one path, its clients, groups and broadcast.

Every mount is an independent endpoint (Node ``ws``'s ``noServer`` servers sharing one HTTP
server): its own client set, its own connection cap, its own groups.  ``broadcast`` encodes the
frame once (server frames are unmasked, so the bytes are the same for every client) and only
*queues* it on each connection, so it never waits on the slowest client; a client whose queue
overflows is closed with 1013 by its own connection (see :mod:`gateway.ws.connection`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gateway.config.schema import MountConfig, WebSocketConfig
from gateway.ws import frames
from gateway.ws.connection import WebSocketConnection

log = logging.getLogger("gateway.mount")


class Group:
    """A named set of connections within a mount (a chat room, a topic)."""

    def __init__(self, mount: Mount, name: str) -> None:
        self.mount = mount
        self.name = name
        self._members: set[WebSocketConnection] = set()

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, ws: object) -> bool:
        return ws in self._members

    @property
    def members(self) -> frozenset[WebSocketConnection]:
        return frozenset(self._members)

    @contextmanager
    def join(self, ws: WebSocketConnection) -> Iterator[Group]:
        """Be a member for the duration of the ``with`` block (left even on error)."""
        self._members.add(ws)
        try:
            yield self
        finally:
            self._members.discard(ws)
            if not self._members:
                self.mount._drop_group(self)

    def broadcast(self, message: str | bytes, *, exclude: WebSocketConnection | None = None) -> int:
        """Queue ``message`` for every member (except ``exclude``); returns how many took it."""
        return _fan_out(self._members, message, exclude)


class Mount:
    """The run-time side of one ``[plugins.NAME]`` table."""

    def __init__(self, config: MountConfig) -> None:
        self.config = config
        self.name = config.name
        self.settings: WebSocketConfig = config.websocket
        self._clients: set[WebSocketConnection] = set()
        self._groups: dict[str, Group] = {}
        self.reserved = 0  # admitted handshakes not yet registered
        self.plugin: Any = None  # the Plugin instance (class plugins) or the function

    @property
    def clients(self) -> frozenset[WebSocketConnection]:
        """The open connections of this mount."""
        return frozenset(self._clients)

    def __len__(self) -> int:
        return len(self._clients)

    @property
    def full(self) -> bool:
        """At ``max_connections``, counting handshakes that passed admission but are not
        registered yet (so concurrent handshakes cannot overshoot the cap)."""
        return len(self._clients) + self.reserved >= self.settings.max_connections

    def group(self, name: str) -> Group:
        """The group called ``name`` (created on first use, dropped when it empties)."""
        group = self._groups.get(name)
        if group is None:
            group = self._groups[name] = Group(self, name)
        return group

    @property
    def groups(self) -> dict[str, Group]:
        return dict(self._groups)

    def _drop_group(self, group: Group) -> None:
        if self._groups.get(group.name) is group:
            del self._groups[group.name]

    def broadcast(self, message: str | bytes, *, exclude: WebSocketConnection | None = None) -> int:
        """Queue ``message`` for every client of this mount; returns how many took it."""
        return _fan_out(self._clients, message, exclude)

    def register(self, ws: WebSocketConnection, *, reserved: bool = False) -> None:
        """Count ``ws`` among :attr:`clients` until :meth:`unregister` (taking over the place
        reserved for it at admission, if ``reserved``).  Pair the two with ``try``/``finally``:
        plain calls, not a context manager, so an open session keeps no generator alive."""
        if reserved:
            self.reserved -= 1
        self._clients.add(ws)

    def unregister(self, ws: WebSocketConnection) -> None:
        """Stop counting ``ws`` among :attr:`clients` (nothing happens if it was not)."""
        self._clients.discard(ws)

    def close_all(self, code: int, reason: str) -> None:
        """Start closing every client (shutdown: 1001); each finishes in its own task."""
        for ws in list(self._clients):
            ws.close_nowait(code, reason)


def _fan_out(
    members: set[WebSocketConnection], message: str | bytes, exclude: WebSocketConnection | None
) -> int:
    prepared = frames.Prepared(message)  # the frame is encoded once, for everyone
    sent = 0
    for ws in list(members):  # a member may leave while we iterate (slow-consumer close)
        if ws is not exclude and ws.send_nowait(prepared):
            sent += 1
    return sent
