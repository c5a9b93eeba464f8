"""Keep-alive connections to the upstreams: one bounded pool per upstream.

Reuse is where a proxy can hand one user's response to another, so the rules are strict:

1. A connection goes back to the pool only after a complete, well-framed exchange: the
   request sent whole, the response read to its framed end, both sides ``DONE`` in h11
   (:attr:`UpstreamConnection.reusable`).  Any exception inside the lease (an upstream error,
   the client leaving, a cancellation) closes it.
2. ...and only if the upstream sent *nothing* beyond that response, neither in h11's buffer
   nor on the socket (:meth:`UpstreamConnection.surplus`): h11's buffer when the exchange
   ends, both when the idle connection is taken (so bytes that arrived while it sat in the
   pool condemn it too).
3. Once an upstream has sent surplus bytes, its pool turns *strict* for the rest of the
   process: a connection that carried a request body is not reused either.  A site that
   answers without reading a body ("CL.0") answers that body as a second request later;
   rule 2 only catches the second answer if it has arrived by the time we look.

A condemned connection is closed; the first surplus per upstream is logged at WARNING (as
nginx's "upstream sent more data than specified"), later ones at most once a minute with a
count.  ``pool_size`` bounds the *idle* connections per upstream, as nginx's ``keepalive``
does; connections in use are bounded by the gateway's own connection cap, since each serves
one client request.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import trio

from gateway.core.upstream import Upstream
from gateway.log import RateLimit
from gateway.proxy.client import Surplus, UpstreamConnection, connect

log = logging.getLogger("gateway.proxy")

SURPLUS_LOG_INTERVAL = 60.0  # seconds between repeated surplus warnings for one upstream


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
        self.reused = 0  # leases served by an idle connection (the pool's hit count)
        self.surplus = 0  # connections condemned for bytes beyond a response (rule 2)
        self.strict = False  # rule 3: set by the first surplus, never cleared
        self.closed = False
        self._surplus_log = RateLimit(burst=1, interval=SURPLUS_LOG_INTERVAL)

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[UpstreamConnection]:
        """A connection for one exchange; see the module docstring for what happens after."""
        conn = await self.acquire()
        completed = False
        try:
            yield conn
            completed = True
        finally:
            await self.release(conn, completed=completed)

    async def acquire(self) -> UpstreamConnection:
        """As :meth:`lease` without the context manager (the proxy's hot path): the caller
        must :meth:`release` (or :meth:`put_back`) it in a ``finally``, ``completed=False`` on
        any exception."""
        idle = self.idle
        while idle:
            conn = idle.pop()  # most recently used first: the least likely to be stale
            found = conn.surplus()
            if found is None:
                self.reused += 1
                return conn
            if found is Surplus.DATA:
                self._condemn(conn, "while idle in the pool")
            await conn.aclose()  # EOF: the upstream closed an idle connection, as it may
        conn = await connect(
            self.upstream, connect_timeout=self.connect_timeout, read_timeout=self.read_timeout
        )
        self.opened += 1
        return conn

    async def release(self, conn: UpstreamConnection, *, completed: bool) -> None:
        """Give ``conn`` back after its exchange: kept for reuse, or closed."""
        if not self.put_back(conn, completed=completed):
            await conn.aclose()

    def put_back(self, conn: UpstreamConnection, *, completed: bool) -> bool:
        """:meth:`release` without the wait: True when ``conn`` went back to the pool, else
        the caller closes it (the usual exchange then needs no await here)."""
        if completed and self._may_keep(conn):
            conn.start_next_cycle()
            self.idle.append(conn)
            return True
        conn.broken = True  # an error or cancellation, or not reusable: never again
        return False

    def _may_keep(self, conn: UpstreamConnection) -> bool:
        if not conn.reusable:
            return False  # rule 1
        # h11's buffer only: the socket is polled when the connection is next taken, which
        # also sees whatever arrives meanwhile (one syscall per exchange, not two).
        found = conn.surplus(poll=False)
        if found is Surplus.DATA:
            self._condemn(conn, "after the response")
        if found is not None:
            return False  # rule 2
        if self.strict and conn.carried_body:
            return False  # rule 3
        return not self.closed and len(self.idle) < self.max_idle

    def _condemn(self, conn: UpstreamConnection, when: str) -> None:
        """Count (and log, rate-limited) an upstream that sent bytes nobody asked for."""
        self.surplus += 1
        self.strict = True
        if (dropped := self._surplus_log.allow()) is None:
            return
        more = f" ({dropped} more since the last warning)" if dropped else ""
        log.warning(
            "upstream %s sent data beyond its response %s; connection closed, not reused, "
            "and connections that carried a request body are no longer reused%s",
            self.upstream,
            when,
            more,
        )

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
