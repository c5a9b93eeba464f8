"""The broker's trio shell against a real redis-server: two brokers (two "processes") in one
trio run, each with its own node id and a recording stand-in for its mounts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import coredis
import trio

from gateway.broker import envelope, names
from gateway.broker.shell import Broker, backoff
from gateway.broker.subscriptions import Route
from gateway.config.schema import BrokerConfig
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer

ROOM = Route("g", "chat", "lobby")
STEP = 5.0  # seconds: no single step may take longer


@dataclass
class Recorder:
    """Stands in for a process's mounts: records what the broker delivers."""

    got: list[tuple[Route, str | bytes]] = field(default_factory=list)
    counts: dict[Route, int] = field(default_factory=dict)
    arrived: trio.Event = field(default_factory=trio.Event)

    def deliver(self, route: Route, message: str | bytes) -> int:
        self.got.append((route, message))
        self.arrived.set()
        return 1

    def local_counts(self) -> Iterable[tuple[Route, int]]:
        return list(self.counts.items())

    async def wait_for(self, n: int) -> None:
        with trio.fail_after(STEP):
            while len(self.got) < n:
                self.arrived = trio.Event()
                await self.arrived.wait()


def config(url: str, **extra: object) -> BrokerConfig:
    return BrokerConfig(url=url, prefix="test", **extra)  # type: ignore[arg-type]


@asynccontextmanager
async def running(
    nursery: trio.Nursery, cfg: BrokerConfig, limit: int = 1000
) -> AsyncIterator[tuple[Broker, Recorder]]:
    broker = Broker(cfg)
    local = Recorder()
    broker.attach(local, {"chat": limit})
    scope = trio.CancelScope()

    async def run() -> None:
        with scope:
            await broker.run()

    nursery.start_soon(run)
    try:
        yield broker, local
    finally:
        scope.cancel()


async def until(predicate: object, timeout: float = STEP) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]  # noqa: ASYNC110 (state elsewhere)
            await trio.sleep(0.01)


async def subscribed(*brokers: Broker) -> None:
    for broker in brokers:
        await until(lambda b=broker: b.connected)
        assert await broker.wait_subscribed(STEP)


async def test_a_broadcast_reaches_the_other_node_once_and_never_its_own(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    cfg = config(redis_server.url)
    async with running(nursery, cfg) as (a, got_a), running(nursery, cfg) as (b, got_b):
        a.hold(ROOM)
        b.hold(ROOM)
        await subscribed(a, b)
        a.publish(ROOM, "hello")
        a.publish(ROOM, b"\x00binary")
        await got_b.wait_for(2)
        assert got_b.got == [(ROOM, "hello"), (ROOM, b"\x00binary")]
        await until(lambda: a.stats["received_own"] == 2)
        assert got_a.got == []  # the sender delivered locally already
        assert a.stats["published"] == 2


async def test_order_per_publisher_is_kept(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    cfg = config(redis_server.url)
    async with running(nursery, cfg) as (a, _), running(nursery, cfg) as (b, got_b):
        b.hold(ROOM)
        await subscribed(a, b)
        for i in range(2000):  # several pipelined batches
            a.publish(ROOM, str(i))
        await got_b.wait_for(2000)
        assert [m for _, m in got_b.got] == [str(i) for i in range(2000)]


async def test_unsubscribed_after_the_last_holder(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    cfg = config(redis_server.url)
    async with running(nursery, cfg) as (a, _), running(nursery, cfg) as (b, got_b):
        b.hold(ROOM)
        b.hold(ROOM)
        await subscribed(a, b)
        b.release(ROOM)
        await subscribed(b)
        assert b.subscriptions.active == {b.channel(ROOM)}
        b.release(ROOM)
        await subscribed(b)
        assert b.subscriptions.active == frozenset()
        async with coredis.Redis.from_url(redis_server.url) as client:
            assert await client.pubsub_numsub(b.channel(ROOM)) == {b.channel(ROOM): 0}
        a.publish(ROOM, "nobody listens")
        await until(lambda: a.stats["published"] == 1)
        await trio.sleep(0.1)
        assert got_b.got == []


async def test_untrusted_messages_are_counted_and_ignored(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    async with running(nursery, config(redis_server.url), limit=8) as (b, got_b):
        b.hold(ROOM)
        await subscribed(b)
        channel = names.channel("test", ROOM)
        other = envelope.new_node_id()
        async with coredis.Redis.from_url(redis_server.url) as client:
            for data in (
                b"junk",
                b"\x09\x01" + other + b"x",
                b"\x01\x01" + other + b"\xff",
                envelope.encode(other, "123456789"),  # over the mount's 8 bytes
                envelope.encode(other, "fine"),
            ):
                await client.publish(channel, data)
        await got_b.wait_for(1)
        assert got_b.got == [(ROOM, "fine")]
        assert b.stats["received_invalid_short"] == 1
        assert b.stats["received_invalid_version"] == 1
        assert b.stats["received_invalid_utf8"] == 1
        assert b.stats["received_invalid_too_large"] == 1


async def test_too_large_to_publish_is_dropped_at_the_sender(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    async with running(nursery, config(redis_server.url), limit=4) as (a, _):
        await subscribed(a)
        a.publish(ROOM, "12345")
        a.publish(ROOM, "1234")
        assert a.stats["publish_dropped_too_large"] == 1
        await until(lambda: a.stats["published"] == 1)


async def test_a_full_queue_drops_and_counts(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    async with running(nursery, config(redis_server.url, publish_queue=3)) as (a, _):
        await subscribed(a)
        for i in range(10):  # synchronously: the publisher task cannot run in between
            a.publish(ROOM, str(i))
        assert a.stats["publish_dropped_queue_full"] == 7
        await until(lambda: a.stats["published"] == 3)


async def test_cluster_counts_add_up_and_a_dead_node_vanishes(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    cfg = config(redis_server.url, node_ttl=1.0)
    async with running(nursery, cfg) as (a, local_a):
        async with running(nursery, cfg) as (b, local_b):
            await subscribed(a, b)
            local_a.counts[ROOM] = 2
            local_b.counts[ROOM] = 3
            assert await a.count(ROOM, 2) == 2  # b has not written yet
            assert await b.count(ROOM, 3) == 5
            assert await a.count(ROOM, 2) == 5
        # b is gone without a goodbye: its alive key expires after node_ttl
        with trio.fail_after(3):
            while await a.count(ROOM, 2) != 2:  # noqa: ASYNC110 (Redis expires the key)
                await trio.sleep(0.1)
        assert await a.count(ROOM, 0) == 0


async def test_redis_down_at_start_then_up(nursery: trio.Nursery, tmp_path: object) -> None:
    server = RedisServer(tmp_path / "redis", port=free_port())  # type: ignore[operator]
    async with running(nursery, config(server.url, retry_max_delay=0.2)) as (a, _):
        a.hold(ROOM)
        await trio.sleep(0.3)
        assert not a.connected
        a.publish(ROOM, "lost")
        assert a.stats["publish_dropped_disconnected"] == 1
        assert await a.count(ROOM, 4) == 4  # the local count, when Redis cannot answer
        assert a.stats["publish_failures"] >= 1
        try:
            await trio.to_thread.run_sync(server.start)
            with trio.fail_after(1.0):  # back-off capped at 0.2 s: up well within a second
                await subscribed(a)
            assert a.subscriptions.active == {a.channel(ROOM)}
        finally:
            server.stop()


async def test_redis_killed_and_restarted(nursery: trio.Nursery, redis_server: RedisServer) -> None:
    cfg = config(redis_server.url)
    async with running(nursery, cfg) as (a, _), running(nursery, cfg) as (b, got_b):
        b.hold(ROOM)
        await subscribed(a, b)
        a.publish(ROOM, "before")
        await got_b.wait_for(1)
        await trio.to_thread.run_sync(redis_server.kill)
        await until(lambda: not b.subscribed)
        a.publish(ROOM, "during")  # dropped (at-most-once), whether queued or not
        await until(lambda: a.stats["publish_dropped_disconnected"] == 1)
        await until(lambda: not a.connected)
        await trio.to_thread.run_sync(redis_server.start)
        with trio.fail_after(1.5):
            await subscribed(a, b)
        a.publish(ROOM, "after")
        await got_b.wait_for(2)
        assert [m for _, m in got_b.got] == ["before", "after"]


def test_backoff_grows_is_capped_and_jittered() -> None:
    delays = [backoff(n, 0.5) for n in range(1, 12)]
    assert all(0 < d <= 0.5 for d in delays)
    assert backoff(1, 0.5) <= 0.05
    assert max(backoff(10, 0.5) for _ in range(50)) > min(backoff(10, 0.5) for _ in range(50))
