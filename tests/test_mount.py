"""gateway/mount.py's bookkeeping without sockets: clients, groups, per-user sessions, what a
fan-out reaches, and what the broker is told (a recording stand-in for
:class:`gateway.mount.Cluster`: the real one is tested against redis-server in tests/broker)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import trio
from trio_websocket import CloseReason

from gateway.broker.subscriptions import Route
from gateway.config.schema import MountConfig, WebSocketConfig
from gateway.mount import KEEPALIVE_TIMEOUT, SLOW_CONSUMER, Mount
from gateway.ws import frames
from gateway.ws.connection import WebSocketConnection


@dataclass
class Recorder:
    """What a mount asks of the cluster, in order."""

    calls: list[tuple[str, Route, Any]] = field(default_factory=list)
    remote: int = 0  # members the "other processes" report

    def publish(self, route: Route, message: str | bytes) -> None:
        self.calls.append(("publish", route, message))

    def hold(self, route: Route) -> None:
        self.calls.append(("hold", route, None))

    def release(self, route: Route) -> None:
        self.calls.append(("release", route, None))

    async def count(self, route: Route, local: int) -> int:
        return local + self.remote


class Conn:
    """Stands in for a WebSocketConnection: records prepared frames, may refuse them."""

    def __init__(self, *, takes: bool = True, closed: CloseReason | None = None) -> None:
        self.received: list[frames.Prepared] = []
        self.takes = takes
        self.closed = closed
        self.messages_in = self.messages_out = self.bytes_in = self.bytes_out = 0

    def send_nowait(self, prepared: frames.Prepared) -> bool:
        if self.takes:
            self.received.append(prepared)
        return self.takes


def ws(conn: Conn) -> WebSocketConnection:
    return cast(WebSocketConnection, conn)


def mount(*, max_connections: int = 10) -> Mount:
    settings = WebSocketConfig(max_connections=max_connections)
    return Mount(MountConfig("room", "/room", "plugins.echo:Echo", {}, settings))


def test_reservations_hold_places_until_registered_or_released() -> None:
    m = mount(max_connections=2)
    a, b = Conn(), Conn()
    first, second = m.reserve(), m.reserve()
    assert first is not None and second is not None
    assert m.full and m.reserve() is None  # both places held: a third handshake is refused
    with first:
        first.register(ws(a))
        assert (len(m), m.reserved, m.full) == (1, 1, True)
    with second:
        pass  # the 101 never went out: the place is freed, nobody registered
    assert (len(m), m.reserved, m.full) == (1, 0, False)
    third = m.reserve()
    assert third is not None
    with third:
        third.register(ws(b))
        third.release()  # released twice (register, then here, then the with): counted once
    assert (len(m), m.reserved) == (2, 0)
    m.unregister(ws(a))
    m.unregister(ws(a))  # twice: nothing happens
    assert m.clients == frozenset({ws(b)})
    assert not m.full


def test_a_reservation_is_freed_when_the_handshake_fails() -> None:
    m = mount(max_connections=1)
    place = m.reserve()
    assert place is not None
    with pytest.raises(trio.BrokenResourceError), place:
        raise trio.BrokenResourceError("the client left before the 101")
    assert (len(m), m.reserved, m.full) == (0, 0, False)


def test_closes_are_counted_by_code_with_the_two_named_ones_apart() -> None:
    m = mount()
    conns = [
        Conn(closed=CloseReason(1013, SLOW_CONSUMER)),
        Conn(closed=CloseReason(1011, KEEPALIVE_TIMEOUT)),
        Conn(closed=CloseReason(1011, "handler crashed")),
        Conn(closed=None),  # never closed cleanly: counted as 1006
    ]
    for c in conns:
        m.register(ws(c))
    for c in conns:
        m.unregister(ws(c))
    assert dict(m.closes) == {1013: 1, 1011: 2, 1006: 1}
    assert (m.slow_consumer_closes, m.keepalive_closes) == (1, 1)


def test_a_broadcast_is_one_frame_for_everyone_but_the_excluded() -> None:
    m = mount()
    a, b, slow = Conn(), Conn(), Conn(takes=False)
    for c in (a, b, slow):
        m.register(ws(c))
    assert m.broadcast("hi", exclude=ws(b)) == 1  # slow refused it, b excluded
    assert len(a.received) == 1 and b.received == []
    assert m.broadcast(b"\x00bin") == 2
    assert a.received[1] is b.received[0]  # encoded once, the same object queued twice
    assert (m.messages_out, m.bytes_out) == (3, 2 + 2 * 4)


def test_groups_live_while_they_have_members() -> None:
    m = mount()
    a, b = Conn(), Conn()
    room = m.group("lobby")
    assert m.group("lobby") is room
    with room.join(ws(a)):
        with room.join(ws(b)):
            assert len(room) == 2 and ws(a) in room
            assert room.broadcast("x", exclude=ws(a)) == 1
        assert room.members == frozenset({ws(a)})
        assert "lobby" in m.groups
    assert "lobby" not in m.groups
    assert m.group("lobby") is not room  # a new, empty group


def test_a_member_leaves_its_group_even_when_the_block_raises() -> None:
    m = mount()
    room = m.group("g")
    with pytest.raises(RuntimeError), room.join(ws(Conn())):
        raise RuntimeError
    assert len(room) == 0 and "g" not in m.groups


async def test_without_a_broker_cluster_counts_are_local() -> None:
    m = mount()
    m.register(ws(Conn()))
    room = m.group("g")
    with room.join(ws(Conn())):
        assert (await m.cluster_count(), await room.cluster_count()) == (1, 1)


async def test_the_broker_is_held_while_there_are_local_holders_and_told_each_broadcast() -> None:
    m = mount()
    cluster = m.cluster = Recorder(remote=5)
    a, b = Conn(), Conn()
    m.register(ws(a))
    m.register(ws(b))  # the mount's route is held once, not per client
    room = m.group("lobby")
    with room.join(ws(a)), room.join(ws(b)):
        room.broadcast("hello")
        assert await room.cluster_count() == 7
    m.broadcast(b"all")
    m.unregister(ws(a))
    m.unregister(ws(b))
    mount_route, group_route = Route("m", "room"), Route("g", "room", "lobby")
    assert cluster.calls == [
        ("hold", mount_route, None),
        ("hold", group_route, None),
        ("publish", group_route, "hello"),  # one PUBLISH per broadcast, whatever the members
        ("release", group_route, None),
        ("publish", mount_route, b"all"),
        ("release", mount_route, None),
    ]


def test_per_user_sessions_and_delivery() -> None:
    m = mount()
    cluster = m.cluster = Recorder()
    alice1, alice2, bob = Conn(), Conn(), Conn()
    m.register(ws(alice1), user="alice")
    m.register(ws(alice2), user="alice")
    m.register(ws(bob), user="bob")
    assert m.sessions_of("alice") == frozenset({ws(alice1), ws(alice2)})
    assert m.send_to_user("alice", "for you", exclude=ws(alice2)) == 1
    assert (len(alice1.received), alice2.received, bob.received) == (1, [], [])
    alice_route = Route("u", "room", "alice")
    assert ("publish", alice_route, "for you") in cluster.calls
    m.unregister(ws(alice1))
    assert ("release", alice_route, None) not in cluster.calls  # alice2 is still here
    m.unregister(ws(alice2))
    assert ("release", alice_route, None) in cluster.calls
    assert m.sessions_of("alice") == frozenset()


def test_messages_from_other_processes_reach_the_right_local_holders() -> None:
    m = mount()
    m.cluster = Recorder()
    member, other, alice = Conn(), Conn(), Conn()
    m.register(ws(member))
    m.register(ws(other))
    m.register(ws(alice), user="alice")
    with m.group("g").join(ws(member)):
        assert m.deliver(Route("g", "room", "g"), "to the group") == 1
        assert m.deliver(Route("g", "room", "nobody-here"), "lost") == 0
    assert m.deliver(Route("u", "room", "alice"), "to alice") == 1
    assert m.deliver(Route("m", "room"), "to all") == 3
    assert (len(member.received), len(other.received), len(alice.received)) == (2, 1, 2)
