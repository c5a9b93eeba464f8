"""Keep-alive connections to the upstreams: one bounded pool per upstream.

A lease hands out an idle connection (checked for staleness first) or opens a new one; when
the lease ends the connection goes back only if its exchange completed with reusable framing
(:attr:`UpstreamConnection.reusable`) and the pool has room, else it is closed.  Any exception
inside the lease (an upstream error, the client leaving, a cancellation) closes it: a
connection is never reused after an error.  ``pool_size`` bounds the *idle* connections per
upstream, as nginx's ``keepalive`` does; connections in use are bounded by the gateway's own
connection cap, since each serves one client request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import trio

from gateway.core.upstream import Upstream
from gateway.proxy.client import UpstreamConnection, connect


class UpstreamPool:
    """Idle keep-alive connections to one upstream, at most ``max_idle`` of them."""

    def __init__(
        self, upstream: Upstream, *, max_idle: int, connect_timeout: float, read_timeout: float
    ) -> None:
        self.upstream = upstream
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle: list[UpstreamConnection] = []
        self.opened = 0  # connections ever opened (tests and logs)
        self.closed = False

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[UpstreamConnection]:
        """A connection for one exchange; see the module docstring for what happens after."""
        conn = await self._acquire()
        completed = False
        try:
            yield conn
            completed = True
        finally:
            if not completed:
                conn.broken = True  # an error or cancellation: never reuse
            await self._release(conn)

    async def _acquire(self) -> UpstreamConnection:
        while self.idle:
            conn = self.idle.pop()  # most recently used first: the least likely to be stale
            if not conn.is_stale():
                return conn
            await conn.aclose()
        conn = await connect(
            self.upstream, connect_timeout=self.connect_timeout, read_timeout=self.read_timeout
        )
        self.opened += 1
        return conn

    async def _release(self, conn: UpstreamConnection) -> None:
        if not self.closed and conn.reusable and len(self.idle) < self.max_idle:
            conn.start_next_cycle()
            self.idle.append(conn)
            return
        await conn.aclose()

    async def aclose(self) -> None:
        """Close the idle connections; connections still leased close when released."""
        self.closed = True
        idle, self.idle = self.idle, []
        for conn in idle:
            await conn.aclose()


class Pools:
    """One :class:`UpstreamPool` per configured upstream."""

    def __init__(
        self,
        upstreams: Iterable[Upstream],
        *,
        max_idle: int,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self.pools = {
            u: UpstreamPool(
                u, max_idle=max_idle, connect_timeout=connect_timeout, read_timeout=read_timeout
            )
            for u in upstreams
        }

    def __getitem__(self, upstream: Upstream) -> UpstreamPool:
        return self.pools[upstream]

    async def aclose(self) -> None:
        """Close every pool's idle connections (at shutdown); safe to call twice."""
        with trio.CancelScope(shield=True):
            for pool in self.pools.values():
                await pool.aclose()
