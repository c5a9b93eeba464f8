"""A mount at run time: one plugin on one path, its clients, groups and broadcast.

Every mount is an independent endpoint (Node ``ws``'s ``noServer`` servers sharing one HTTP
server): its own client set, its own connection cap, its own groups.  ``broadcast`` encodes the
frame once (server frames are unmasked, so the bytes are the same for every client) and only
*queues* it on each connection, so it never waits on the slowest client; a client whose queue
overflows is closed with 1013 by its own connection (see :mod:`gateway.ws.connection`).

With ``[broker]`` a mount is one process's part of a cluster (:attr:`Mount.cluster`): local
members still get every broadcast at once, and the same call queues one PUBLISH so every other
process fans the message out to its own members (:mod:`gateway.broker`).  A process subscribes
to a group's channel while the group has local members, to its mount's while it has clients,
and to a user's while that user has sessions here.  ``len()`` stays local;
:meth:`Group.cluster_count` and :meth:`Mount.cluster_count` are the cluster-wide counts.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from gateway.broker.subscriptions import Route
from gateway.config.schema import MountConfig, WebSocketConfig
from gateway.ws import frames
from gateway.ws.connection import WebSocketConnection

log = logging.getLogger("gateway.mount")

# The engine's Close reasons for the two closes counted on their own (gateway.ws.connection
# and gateway.ws.protocol): a client that did not read its queue, a peer that stopped answering.
SLOW_CONSUMER = "slow consumer"
KEEPALIVE_TIMEOUT = "keepalive ping timeout"


class Cluster(Protocol):
    """The other processes, as a mount sees them (:class:`gateway.broker.shell.Broker`)."""

    def publish(self, route: Route, message: str | bytes) -> None: ...
    def hold(self, route: Route) -> None: ...
    def release(self, route: Route) -> None: ...
    async def count(self, route: Route, local: int) -> int: ...


class Group:
    """A named set of connections within a mount (a chat room, a topic)."""

    def __init__(self, mount: Mount, name: str) -> None:
        self.mount = mount
        self.name = name
        self._members: set[WebSocketConnection] = set()
        self.route = Route("g", mount.name, name)

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
        cluster = self.mount.cluster
        first = not self._members
        self._members.add(ws)
        if first and cluster is not None:
            cluster.hold(self.route)  # subscribe while the group has local members
        try:
            yield self
        finally:
            self._members.discard(ws)
            if not self._members:
                if cluster is not None:
                    cluster.release(self.route)  # the last local member left: unsubscribe
                self.mount._drop_group(self)

    def broadcast(self, message: str | bytes, *, exclude: WebSocketConnection | None = None) -> int:
        """Queue ``message`` for every member (except ``exclude``); returns how many local
        members took it.  With a broker, also queues one PUBLISH for the other processes."""
        sent = _fan_out(self.mount, self._members, message, exclude)
        if self.mount.cluster is not None:
            self.mount.cluster.publish(self.route, message)
        return sent

    async def cluster_count(self) -> int:
        """Members in every process (this one's included); ``len(group)`` without a broker,
        or when Redis does not answer in time."""
        cluster = self.mount.cluster
        if cluster is None:
            return len(self._members)
        return await cluster.count(self.route, len(self._members))


class Mount:
    """The run-time side of one ``[plugins.NAME]`` table."""

    def __init__(self, config: MountConfig) -> None:
        self.config = config
        self.name = config.name
        self.settings: WebSocketConfig = config.websocket
        self._clients: set[WebSocketConnection] = set()
        self._groups: dict[str, Group] = {}
        self.reserved = 0  # admitted handshakes not yet registered
        self.cluster: Cluster | None = None  # the broker, with [broker]
        self.route = Route("m", self.name)
        self._users: dict[str, set[WebSocketConnection]] = {}  # authenticated sessions
        self._user_of: dict[WebSocketConnection, str] = {}
        # For metrics (gateway.admin.collector reads them at scrape time): handshakes by
        # status; messages and payload bytes of closed connections and of every fan-out (open
        # connections count their own in the engine); closes by code.
        self.handshakes: Counter[int] = Counter()
        self.messages_in = self.messages_out = self.bytes_in = self.bytes_out = 0
        self.closes: Counter[int] = Counter()
        self.slow_consumer_closes = 0
        self.keepalive_closes = 0

    @property
    def clients(self) -> frozenset[WebSocketConnection]:
        """The open connections of this mount."""
        return frozenset(self._clients)

    def __len__(self) -> int:
        return len(self._clients)

    @property
    def full(self) -> bool:
        """At ``max_connections``, counting the places :meth:`reserve` holds for handshakes
        that passed admission (so concurrent handshakes cannot overshoot the cap)."""
        return len(self._clients) + self.reserved >= self.settings.max_connections

    def reserve(self) -> Reservation | None:
        """Hold a place among ``max_connections`` for a handshake that passed admission, or
        ``None`` when the mount is full.  Use the :class:`Reservation` as a context: the place
        is freed when the ``with`` block ends, having become a client
        (:meth:`Reservation.register`) or not (the 101 never went out)."""
        if self.full:
            return None
        self.reserved += 1
        return Reservation(self)

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
        """Queue ``message`` for every client of this mount; returns how many local clients
        took it.  With a broker, also queues one PUBLISH for the other processes."""
        sent = _fan_out(self, self._clients, message, exclude)
        if self.cluster is not None:
            self.cluster.publish(self.route, message)
        return sent

    def sessions_of(self, user: str) -> frozenset[WebSocketConnection]:
        """This process's open connections of the authenticated ``user`` on this mount."""
        return frozenset(self._users.get(user, ()))

    def send_to_user(
        self, user: str, message: str | bytes, *, exclude: WebSocketConnection | None = None
    ) -> int:
        """Queue ``message`` for every session of the authenticated ``user`` on this mount,
        in every process (Centrifugo's personal channel); returns how many local sessions took
        it.  ``user`` is the principal's name (:func:`gateway.auth.principal_user`)."""
        sent = _fan_out(self, self._users.get(user, set()), message, exclude)
        if self.cluster is not None:
            self.cluster.publish(Route("u", self.name, user), message)
        return sent

    async def cluster_count(self) -> int:
        """Clients of this mount in every process; ``len(mount)`` without a broker, or when
        Redis does not answer in time."""
        if self.cluster is None:
            return len(self._clients)
        return await self.cluster.count(self.route, len(self._clients))

    def deliver(self, route: Route, message: str | bytes) -> int:
        """Fan out a message another process published to ``route`` (the broker calls this;
        the frame is encoded once here, for every local holder)."""
        if route.kind == "g":
            group = self._groups.get(route.name)
            return _fan_out(self, group._members, message, None) if group is not None else 0
        if route.kind == "u":
            return _fan_out(self, self._users.get(route.name, set()), message, None)
        return _fan_out(self, self._clients, message, None)

    def register(self, ws: WebSocketConnection, *, user: str | None = None) -> None:
        """Count ``ws`` among :attr:`clients` until :meth:`unregister`, and among ``user``'s
        sessions if it is an authenticated one.  Pair the two with ``try``/``finally``: plain
        calls, not a context manager, so an open session keeps no generator alive.  (A
        handshake registers through its :class:`Reservation`.)"""
        if not self._clients and self.cluster is not None:
            self.cluster.hold(self.route)
        self._clients.add(ws)
        if user is not None:
            sessions = self._users.get(user)
            if sessions is None:
                sessions = self._users[user] = set()
                if self.cluster is not None:
                    self.cluster.hold(Route("u", self.name, user))
            sessions.add(ws)
            self._user_of[ws] = user

    def unregister(self, ws: WebSocketConnection) -> None:
        """Stop counting ``ws`` among :attr:`clients` (nothing happens if it was not)."""
        if ws not in self._clients:
            return
        self._clients.discard(ws)
        self._count_end(ws)
        if not self._clients and self.cluster is not None:
            self.cluster.release(self.route)
        user = self._user_of.pop(ws, None)
        if user is not None:
            sessions = self._users[user]
            sessions.discard(ws)
            if not sessions:
                del self._users[user]
                if self.cluster is not None:
                    self.cluster.release(Route("u", self.name, user))

    def _count_end(self, ws: WebSocketConnection) -> None:
        """A session ended: its close code, and its traffic into the mount's totals."""
        closed = ws.closed
        code = closed.code if closed is not None else 1006
        self.closes[code] += 1
        reason = closed.reason if closed is not None else None
        if code == 1013 and reason == SLOW_CONSUMER:
            self.slow_consumer_closes += 1
        elif code == 1011 and reason == KEEPALIVE_TIMEOUT:
            self.keepalive_closes += 1
        self.messages_in += ws.messages_in
        self.messages_out += ws.messages_out
        self.bytes_in += ws.bytes_in
        self.bytes_out += ws.bytes_out

    def close_all(self, code: int, reason: str) -> None:
        """Start closing every client (shutdown: 1001); each finishes in its own task."""
        for ws in list(self._clients):
            ws.close_nowait(code, reason)


class Reservation:
    """One place among a mount's ``max_connections``, held from admission until the new
    connection is registered or the handshake fails (:meth:`Mount.reserve`).  A context
    manager: leaving the ``with`` block frees the place whatever happened in it; a class,
    not a generator, so nothing of it outlives the handshake."""

    __slots__ = ("_held", "_mount")

    def __init__(self, mount: Mount) -> None:
        self._mount = mount
        self._held = True

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        """Free the place (once; later calls do nothing)."""
        if self._held:
            self._held = False
            self._mount.reserved -= 1

    def register(self, ws: WebSocketConnection, *, user: str | None = None) -> None:
        """The handshake succeeded: ``ws`` takes this place as a client (:meth:`Mount.register`)."""
        self.release()
        self._mount.register(ws, user=user)


def _fan_out(
    mount: Mount,
    members: set[WebSocketConnection],
    message: str | bytes,
    exclude: WebSocketConnection | None,
) -> int:
    prepared = frames.Prepared(message)  # the frame is encoded once, for everyone
    sent = 0
    for ws in list(members):  # a member may leave while we iterate (slow-consumer close)
        if ws is not exclude and ws.send_nowait(prepared):
            sent += 1
    if sent:  # counted once per fan-out, never per recipient
        mount.messages_out += sent
        mount.bytes_out += sent * frames.payload_size(message)
    return sent
