"""The broker's trio side: two Redis connections per process, through coredis.

coredis runs on anyio, so on trio (redis-py's async client is asyncio-only).  Per process:

* the **publish connection** carries every PUBLISH (one per broadcast, taken from a bounded
  queue and pipelined in batches, in order), the heartbeat (this node's alive key and its
  local counts) and the counts a plugin awaits;
* the **subscription connection** follows :class:`~gateway.broker.subscriptions.Subscriptions`:
  SUBSCRIBE when a target gets its first local holder, UNSUBSCRIBE when the last one leaves.

Each connection lives in its own loop: connect (a fresh coredis client each time, so nothing
of a dead connection is reused), serve until anything fails, then retry with exponential
back-off and jitter capped at ``broker.retry_max_delay``.  While Redis is unreachable local
delivery goes on (the mount delivers before it publishes), broadcasts meant for other
processes are dropped and counted (at-most-once, as socket.io's Redis adapter), and no
WebSocket is touched.  Everything received is untrusted: :func:`gateway.broker.envelope.decode`
checks it, and whatever fails is counted and ignored.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import anyio
import coredis
import coredis.connection
import coredis.exceptions
import trio

from gateway.broker import envelope, names
from gateway.broker.subscriptions import Route, Subscriptions
from gateway.config.schema import BrokerConfig
from gateway.log import RateLimit

log = logging.getLogger("gateway.broker")

# coredis logs every failed connection attempt with a traceback; the broker reports Redis
# trouble itself (one ERROR per outage, then a reminder per REMINDER seconds).
logging.getLogger("coredis").setLevel(logging.CRITICAL)

PUBLISH_BATCH = 512  # PUBLISHes per pipeline
SUBSCRIBE_BATCH = 256  # channels per SUBSCRIBE
RETRY_INITIAL = 0.05  # seconds: the first reconnect delay
REMINDER = 30.0  # seconds between "still unreachable" lines
TROUBLE: tuple[type[BaseException], ...] = (
    coredis.exceptions.RedisError,
    OSError,
    TimeoutError,
    trio.TooSlowError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)

# One round trip for an awaited count: refresh this node's alive key and its own count, then
# add up the counts of the nodes that are alive (a dead node's field is removed on the way).
# KEYS[1] the count hash; ARGV: node key prefix, own node id, own count, ttl in ms.
COUNT_SCRIPT = """
redis.call('SET', ARGV[1] .. ARGV[2], '1', 'PX', ARGV[4])
if tonumber(ARGV[3]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
else
  redis.call('HDEL', KEYS[1], ARGV[2])
end
local total = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if redis.call('EXISTS', ARGV[1] .. fields[i]) == 1 then
    total = total + (tonumber(fields[i + 1]) or 0)
  else
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
return total
"""


class Local(Protocol):
    """What the broker needs of the mounts in this process."""

    def deliver(self, route: Route, message: str | bytes) -> int:
        """Fan ``message`` out to the local holders of ``route``; how many took it."""
        ...

    def local_counts(self) -> Iterable[tuple[Route, int]]:
        """Every counted target (mounts and groups) with its local count."""
        ...


def backoff(attempt: int, cap: float) -> float:
    """The delay before reconnect ``attempt`` (1, 2, ...): exponential from
    :data:`RETRY_INITIAL`, capped at ``cap``, with jitter (half to all of it) so processes
    that lost Redis together do not reconnect together."""
    delay = min(cap, RETRY_INITIAL * 2 ** min(attempt - 1, 30))
    return random.uniform(delay / 2, delay)


class Broker:
    """One process's link to Redis; :meth:`run` it in a nursery for the process's life."""

    def __init__(
        self,
        config: BrokerConfig,
        password: str | None = None,
        *,
        node: bytes | None = None,
    ) -> None:
        self.config = config
        self.password = password
        self.node = node or envelope.new_node_id()
        self.node_id = self.node.hex()
        self.subscriptions = Subscriptions()
        self.stats: Counter[str] = Counter()
        self._limits: dict[str, int] = {}
        self._local: Local | None = None
        self._queue: deque[tuple[bytes, bytes]] = deque()
        self._queued = trio.Event()
        self._subs_changed = trio.Event()
        self._client: coredis.Redis[bytes] | None = None  # the publish connection, when up
        self.publishing = False
        self.subscribed = False
        self._counted: set[bytes] = set()  # count keys holding this node's field
        self._was_up: dict[str, bool] = {}
        self._attempted = {"publish": trio.Event(), "subscription": trio.Event()}
        self._down_since: dict[str, float] = {}
        self._synced = trio.Event()  # set while every wanted channel is subscribed
        self._sub_lost = trio.Event()  # set when the subscription connection goes
        self._overflow_log = RateLimit(burst=1, interval=10.0)
        self._dropped_log = RateLimit(burst=1, interval=10.0)
        self._invalid_log = RateLimit(burst=1, interval=10.0)

    # ------------------------------------------------------------------ wiring

    def attach(self, local: Local, limits: Mapping[str, int]) -> None:
        """Deliver to ``local``; ``limits`` maps each mount to its ``max_message_size``."""
        self._local = local
        self._limits = dict(limits)

    @property
    def connected(self) -> bool:
        """Both connections are up (``broker.required`` makes /readyz wait for this)."""
        return self.publishing and self.subscribed

    def channel(self, route: Route) -> bytes:
        return names.channel(self.config.prefix, route)

    # ------------------------------------------------------------------ the mounts' side

    def publish(self, route: Route, message: str | bytes) -> None:
        """Queue one PUBLISH of ``message`` to ``route`` (never waits).  Dropped and counted
        when Redis is down (at-most-once), when the queue is full, or when the payload is
        larger than the mount's ``max_message_size`` (receivers would refuse it)."""
        if not self.publishing:
            self._drop("disconnected")
            return
        if len(self._queue) >= self.config.publish_queue:
            self._drop("queue_full")
            return
        limit = self._limits.get(route.mount)
        data = envelope.encode(self.node, message)
        if limit is not None and len(data) - envelope.HEADER_BYTES > limit:
            self._drop("too_large")
            return
        self._queue.append((self.channel(route), data))
        self._queued.set()

    def hold(self, route: Route) -> None:
        """``route`` has one more local holder (subscribe on the first)."""
        if self.subscriptions.hold(self.channel(route), route):
            self._changed()

    def release(self, route: Route) -> None:
        """``route`` has one local holder fewer (unsubscribe after the last)."""
        if self.subscriptions.release(self.channel(route)):
            self._changed()

    def _changed(self) -> None:
        self._subs_changed.set()
        if self._synced.is_set():
            self._synced = trio.Event()

    async def count(self, route: Route, local: int) -> int:
        """The cluster-wide count of ``route``, this node's ``local`` count included (and
        written first).  Falls back to ``local`` if Redis does not answer within
        ``broker.timeout``."""
        if self.subscribed:  # counted once this node also hears the target's messages
            await self.wait_subscribed(self.config.timeout)
        client = self._client
        if client is not None:
            key = names.count_key(self.config.prefix, route)
            with trio.move_on_after(self.config.timeout):
                try:
                    total = await client.eval(
                        COUNT_SCRIPT,
                        keys=[key],
                        args=[
                            names.node_key_prefix(self.config.prefix),
                            self.node_id,
                            local,
                            self._ttl_ms,
                        ],
                    )
                except TROUBLE:
                    pass  # Redis trouble: the local count below
                else:
                    if local > 0:
                        self._counted.add(key)
                    else:
                        self._counted.discard(key)
                    if isinstance(total, int):
                        return total
        return local

    async def wait_subscribed(self, timeout: float) -> bool:
        """Wait (at most ``timeout``) until every wanted channel is subscribed; ``False`` if
        Redis is down or it took longer."""
        with trio.move_on_after(timeout):
            while not (self.subscribed and self.subscriptions.in_sync):
                await self._synced.wait()
            return True
        return False

    @property
    def _deadline(self) -> float:
        """The longest any one exchange with Redis may take before the connection is
        considered lost (and made again)."""
        return self.config.connect_timeout + self.config.timeout

    @property
    def _ttl_ms(self) -> int:
        return int(self.config.node_ttl * 1000)

    def _drop(self, why: str) -> None:
        self.stats[f"publish_dropped_{why}"] += 1
        limiter = self._overflow_log if why == "queue_full" else self._dropped_log
        if why != "disconnected" and (skipped := limiter.allow()) is not None:
            log.warning(
                "broker: broadcast not published (%s)%s",
                why.replace("_", " "),
                f"; {skipped} more since the last line" if skipped else "",
            )

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep both connections up until cancelled.  Started once both have made their first
        attempt (connected, or failed: the gateway then serves local traffic and retries), so
        a process that can reach Redis counts its first sessions cluster-wide."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep, "publish", self._publish_session)
            nursery.start_soon(self._keep, "subscription", self._subscription_session)
            with trio.move_on_after(self.config.connect_timeout + self.config.timeout):
                for name in ("publish", "subscription"):
                    await self._attempted[name].wait()
            task_status.started()

    def _new_client(self) -> coredis.Redis[bytes]:
        client: coredis.Redis[bytes] = coredis.Redis.from_url(
            self.config.url,
            password=self.password,
            max_connections=1,  # one connection, requests pipelined on it
            connect_timeout=self.config.connect_timeout,
            stream_timeout=max(self.config.timeout, self.config.connect_timeout),
            client_name=f"gateway-{self.node_id[:8]}",
        )
        client.connection_pool.connection_class = _Connection
        client.connection_pool.timeout = self._deadline  # waiting for its one connection
        return client

    async def _keep(self, name: str, session: Callable[[], Any]) -> None:
        """Run ``session`` again and again.  Logs the first failure of an outage at ERROR (the
        gateway keeps serving local traffic), a reminder every :data:`REMINDER` seconds, and
        the recovery with what the outage cost."""
        attempt = 0
        down_since: float | None = None
        reminded = 0.0
        while True:
            try:
                await session()
            except* TROUBLE as group:
                problem = _describe(group)
            self._attempted[name].set()
            now = time.monotonic()
            if self._was_up.pop(name, False):
                attempt = 0  # it had been up: a new outage starts
                down_since = None
            attempt += 1
            self.stats[f"{name}_failures"] += 1
            if down_since is None:
                down_since = reminded = now
                self._down_since[name] = now
                log.error(
                    "broker: Redis %s connection failed (%s); local delivery goes on, "
                    "retrying with back-off",
                    name,
                    problem,
                )
            elif now - reminded >= REMINDER:
                reminded = now
                log.error(
                    "broker: Redis %s connection still down after %.0fs (%s)",
                    name,
                    now - down_since,
                    problem,
                )
            await trio.sleep(backoff(attempt, self.config.retry_max_delay))

    def _up(self, name: str) -> None:
        self._was_up[name] = True
        self._attempted[name].set()
        since = self._down_since.pop(name, None)
        if since is None:
            log.info("broker: Redis %s connection up (node %s)", name, self.node_id)
        else:
            self.stats[f"{name}_reconnects"] += 1  # back after an outage (for metrics)
            dropped = self.stats["publish_dropped_disconnected"]
            log.warning(
                "broker: Redis %s connection back after %.1fs (%d broadcasts not published "
                "while down, in all)",
                name,
                time.monotonic() - since,
                dropped,
            )

    async def _publish_session(self) -> None:
        async with self._new_client() as client:
            with trio.fail_after(self._deadline):
                await client.ping()
            self._client = client
            self.publishing = True
            self._up("publish")
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._heartbeat, client)
                    nursery.start_soon(self._watch, self._sub_lost)
                    await self._publish_loop(client)
            finally:
                self._client = None
                self.publishing = False
                dropped = len(self._queue)
                if dropped:
                    self._queue.clear()
                    self.stats["publish_dropped_disconnected"] += dropped

    async def _watch(self, lost: trio.Event) -> None:
        """An idle publish connection learns of a lost Redis only when it next writes; the
        subscription connection learns at once.  So when that one is lost, this one is made
        again too, and a broadcast sent after Redis is back never meets a dead connection."""
        await lost.wait()
        raise coredis.exceptions.ConnectionError("the subscription connection was lost")

    async def _publish_loop(self, client: coredis.Redis[bytes]) -> None:
        queue = self._queue
        while True:
            if not queue:
                self._queued = trio.Event()
                await self._queued.wait()
            batch = [queue.popleft() for _ in range(min(len(queue), PUBLISH_BATCH))]
            try:
                with trio.fail_after(self._deadline):
                    async with client.pipeline(transaction=False) as pipe:
                        for channel, data in batch:
                            pipe.publish(channel, data)
            except BaseException:
                self.stats["publish_dropped_disconnected"] += len(batch)
                raise
            self.stats["published"] += len(batch)

    async def _heartbeat(self, client: coredis.Redis[bytes]) -> None:
        """Every third of ``node_ttl``: refresh this node's alive key and write its local
        counts (Redis may have restarted empty); a field this node no longer needs is
        removed."""
        prefix = self.config.prefix
        while True:
            counts: dict[bytes, int] = {}
            if self._local is not None:
                for route, value in self._local.local_counts():
                    if value > 0:
                        counts[names.count_key(prefix, route)] = value
            stale = self._counted - counts.keys()
            with trio.fail_after(self._deadline):
                async with client.pipeline(transaction=False) as pipe:
                    pipe.set(names.node_key(prefix, self.node), b"1", px=self._ttl_ms)
                    for key, value in counts.items():
                        pipe.hset(key, {self.node_id: value})
                        pipe.pexpire(key, self._ttl_ms)
                    for key in stale:
                        pipe.hdel(key, [self.node_id])
            self._counted = set(counts)
            await trio.sleep(self.config.node_ttl / 3)

    async def _subscription_session(self) -> None:
        subs = self.subscriptions
        subs.lost()
        async with (
            self._new_client() as client,
            client.pubsub(retry_policy=None, ignore_subscribe_messages=True) as pubsub,
        ):
            await self._sync(pubsub)
            self.subscribed = True
            self._up("subscription")  # _follow sets _synced once it has caught up
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._follow, pubsub)
                    while True:
                        message = await pubsub.get_message()
                        if message is not None and message["type"] == "message":
                            self._received(message["channel"], message["data"])
            finally:
                self.subscribed = False
                self._sub_lost.set()
                self._sub_lost = trio.Event()
                subs.lost()
                self._synced = trio.Event()

    async def _follow(self, pubsub: Any) -> None:
        """Apply membership changes to the subscription connection as they come."""
        while True:
            self._subs_changed = trio.Event()
            await self._sync(pubsub)
            if not self.subscriptions.in_sync:
                continue
            self._synced.set()
            await self._subs_changed.wait()

    async def _sync(self, pubsub: Any) -> None:
        subs = self.subscriptions
        subscribe, unsubscribe = subs.pending()
        for i in range(0, len(unsubscribe), SUBSCRIBE_BATCH):
            chunk = unsubscribe[i : i + SUBSCRIBE_BATCH]
            await pubsub.unsubscribe(*chunk)
            subs.unsubscribed(chunk)
        for i in range(0, len(subscribe), SUBSCRIBE_BATCH):
            chunk = subscribe[i : i + SUBSCRIBE_BATCH]
            await pubsub.subscribe(*chunk)
            subs.subscribed(chunk)

    def _received(self, channel: object, data: object) -> None:
        self.stats["received"] += 1
        if not isinstance(channel, bytes) or not isinstance(data, bytes):
            self._invalid("type")
            return
        route = self.subscriptions.route(channel)
        if route is None or self._local is None:
            return  # arrived while its UNSUBSCRIBE was in flight
        try:
            env = envelope.decode(data, self._limits.get(route.mount, 0))
        except envelope.Invalid as exc:
            self._invalid(exc.reason)
            return
        if env.node == self.node:
            self.stats["received_own"] += 1  # delivered locally when it was sent
            return
        self.stats["delivered"] += self._local.deliver(route, env.message)

    def _invalid(self, reason: str) -> None:
        self.stats[f"received_invalid_{reason}"] += 1
        if (skipped := self._invalid_log.allow()) is not None:
            log.warning(
                "broker: ignored an invalid message from Redis (%s)%s",
                reason,
                f"; {skipped} more since the last line" if skipped else "",
            )


class _Connection(coredis.connection.TCPConnection):
    """coredis's TCP connection, closing its message buffers when the connection attempt
    fails too (coredis closes them only once connected; a failed attempt would leave them to
    the garbage collector, which warns)."""

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await super().run(task_status=task_status)
        finally:
            for name in _BUFFERS:
                buffer = getattr(self, name, None)
                if buffer is not None:
                    buffer.close()


_BUFFERS = (
    "_write_buffer_in",
    "_write_buffer_out",
    "_push_message_buffer_in",
    "_push_message_buffer_out",
    "_streamed_message_buffer_in",
    "_streamed_message_buffer_out",
)


def _describe(group: BaseExceptionGroup[BaseException]) -> str:
    """The first leaf exception of ``group``, as ``Type: text`` (never the URL's password:
    coredis names the host and port only)."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
