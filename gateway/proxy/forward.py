"""Forward one client request to the legacy site and stream the answer back.

Two tasks per exchange, so neither direction waits for the other: the *pump* reads the
request body from the client (never the whole body in memory: one chunk at a time) and writes
it upstream; the *responder* reads the upstream's answer and writes it to the client.

* Framing is regenerated on both hops (RFC 9112 §6): ``Content-Length`` when known, else
  chunked; h11 enforces it on each side, and HEAD, 204 and 304 carry no body (§6.3).
* ``Expect: 100-continue`` (RFC 9110 §10.1.1) travels upstream with the head; the upstream's
  ``100`` is relayed to a client still waiting for it, and a final answer instead of it is
  relayed as is (the body the client never sent then closes the connection).
* Failures: a body above ``max_body_size`` -> 413 (before connecting when Content-Length says
  so); a malformed or stalled client body -> 400 / 408; the upstream refused -> 502, slow ->
  504 (:mod:`gateway.proxy.client`).  Those answers are only possible while no byte of the
  response was sent; afterwards the client's connection is cut, so a truncated response never
  looks complete.  Any failure discards the upstream connection (:mod:`gateway.proxy.pool`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate

import h11
import trio

from gateway.config.schema import ProxyConfig
from gateway.core.decisions import REASONS, Proxy, Reject
from gateway.core.upstream import parse_upstream
from gateway.errors import UpstreamError
from gateway.proxy import headers as rules
from gateway.proxy.client import UpstreamConnection
from gateway.proxy.pool import Pools

log = logging.getLogger("gateway.proxy")

RECEIVE_SIZE = 65536


@dataclass
class ProxyRuntime:
    """What forwarding needs at run time: the settings, trusted networks and the pools."""

    config: ProxyConfig
    trusted: tuple[rules.Network, ...]
    pools: Pools

    @classmethod
    def build(cls, config: ProxyConfig) -> ProxyRuntime | None:
        """The runtime for a validated ``[proxy]`` table; ``None`` when it names no upstream."""
        urls = [r.upstream for r in config.routes]
        if config.upstream is not None:
            urls.append(config.upstream)
        if not urls:
            return None
        pools = Pools(
            {parse_upstream(u) for u in urls},
            max_idle=config.pool_size,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
        )
        return cls(config, rules.parse_networks(config.trusted_proxies), pools)


@dataclass
class ClientSide:
    """The client's half: its stream and h11 server connection, owned by the HTTP shell.

    ``peer``: its IP address as text (``None`` if unknown); ``close``: end the connection
    after this response (the gateway is draining).
    """

    stream: trio.abc.Stream
    conn: h11.Connection
    peer: str | None
    secure: bool = False
    close: bool = False


class Refused(Exception):
    """The client's request cannot be forwarded: answer ``reject`` if nothing was sent yet."""

    def __init__(self, reject: Reject) -> None:
        self.reject = reject
        super().__init__(reject.detail)


class _ClientGone(Exception):
    """The client closed or stopped reading: there is nobody left to answer."""


async def forward(
    client: ClientSide, request: h11.Request, decision: Proxy, runtime: ProxyRuntime
) -> bool:
    """Carry out ``decision`` for ``request``; True when the client connection may go on.

    Raises :class:`~gateway.errors.UpstreamError` (502/504) or :class:`Refused` (413/400/408)
    for the caller to answer; when a response had already started they are raised all the
    same, and the caller's answer is skipped (h11's state says it is too late) and the
    connection closed.
    """
    config = runtime.config
    length = rules.request_framing(request.headers)
    if length is not None and length > config.max_body_size:
        # nginx's client_max_body_size: refuse before any byte goes upstream.
        raise Refused(Reject(413, "request body too large", close=True))
    trusted = rules.is_trusted(client.peer, runtime.trusted)
    upstream = decision.upstream
    outgoing = h11.Request(
        method=request.method,
        target=request.target,
        headers=rules.request_headers(
            request.headers,
            rules.Client(client.peer, trusted, client.secure),
            http_version=request.http_version,
            upstream_authority=upstream.authority,
            preserve_host=config.preserve_host,
        ),
    )
    async with runtime.pools[upstream].lease() as up:
        await up.send(outgoing)
        exchange = _Exchange(client, up, config)
        await exchange.run()
        return exchange.body_done and not exchange.close_client


class _Exchange:
    """One request/response exchange between ``client`` and the upstream connection ``up``."""

    def __init__(self, client: ClientSide, up: UpstreamConnection, config: ProxyConfig) -> None:
        self.client = client
        self.up = up
        self.config = config
        self.sent_up = 0  # request body bytes written upstream: "progress" for read timeouts
        self.body_done = False  # the whole request body was read and forwarded
        self.close_client = client.close
        self.failure: UpstreamError | Refused | _ClientGone | None = None
        self._pending: h11.Data | h11.EndOfMessage | None = None
        self._look_ahead()  # a request without a body is complete right away

    async def run(self) -> None:
        """Run the pump and the responder; re-raise the first failure (client gone: quietly
        return, the caller sees ``body_done``/``close_client`` and closes)."""
        if self.body_done:
            await self.up.send(h11.EndOfMessage())  # no body: no pump
            self._pending = None
        async with trio.open_nursery() as nursery:
            if not self.body_done:
                nursery.start_soon(self._guard, self._pump, nursery.cancel_scope)
            nursery.start_soon(self._guard, self._respond, nursery.cancel_scope)
        if isinstance(self.failure, _ClientGone):
            self.close_client = True
            self.up.broken = True
        elif self.failure is not None:
            raise self.failure

    async def _guard(self, part: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
        try:
            await part()
        except (UpstreamError, Refused, _ClientGone) as exc:
            self.failure = self.failure or exc
            scope.cancel()

    # -- client -> upstream -------------------------------------------------------------------

    async def _pump(self) -> None:
        limit = self.config.max_body_size
        while True:
            event = await self._client_event()
            if isinstance(event, h11.EndOfMessage):
                await self.up.send(h11.EndOfMessage())
                return
            self.sent_up += len(event.data)
            if self.sent_up > limit:
                # A chunked body grew past the limit: abort the upstream exchange (the lease
                # discards the connection), 413 if the response has not started.
                raise Refused(Reject(413, "request body too large", close=True))
            await self.up.send(h11.Data(data=event.data))

    def _look_ahead(self) -> None:
        """Take the client's next body event if h11 has it without reading, so
        ``body_done`` is set as soon as the body's end is known: the upstream may answer
        right after our last write, before the pump's next turn."""
        if self._pending is not None or self.body_done:
            return
        try:
            event = self.client.conn.next_event()
        except h11.RemoteProtocolError:
            return  # h11 raises it again on the pump's next call
        if isinstance(event, h11.Data | h11.EndOfMessage):
            self._pending = event
            self.body_done = isinstance(event, h11.EndOfMessage)

    async def _client_event(self) -> h11.Data | h11.EndOfMessage:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._look_ahead()
            return pending
        conn = self.client.conn
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                raise Refused(Reject(400, "malformed request body", close=True)) from None
            if isinstance(event, h11.Data | h11.EndOfMessage):
                self.body_done = isinstance(event, h11.EndOfMessage)
                self._look_ahead()
                return event
            if event is not h11.NEED_DATA:
                raise _ClientGone  # ConnectionClosed mid-body
            with trio.move_on_after(self.config.read_timeout):
                try:
                    data = await self.client.stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    raise _ClientGone from None
                if not data:
                    raise _ClientGone  # EOF in the middle of the body
                conn.receive_data(bytes(data))
                continue
            raise Refused(Reject(408, "request body timed out", close=True))

    # -- upstream -> client -------------------------------------------------------------------

    async def _respond(self) -> None:
        up = self.up
        while True:
            event = await up.next_event(lambda: self.sent_up)
            if isinstance(event, h11.Response):
                break
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    raise UpstreamError("upstream switched protocols unasked")
                if event.status_code == 100 and self.client.conn.they_are_waiting_for_100_continue:
                    await self._to_client(h11.InformationalResponse(status_code=100, headers=[]))
                continue  # other 1xx (103 Early Hints...) are dropped: optional (RFC 9110 §15.2)
            raise UpstreamError("unexpected event from upstream")
        headers = rules.response_headers(
            event.headers,
            http_version=event.http_version,
            date=formatdate(usegmt=True).encode("ascii"),
        )
        if not self.body_done:
            # The request body is not all read (the upstream answered early, or refused an
            # Expect: 100-continue): nothing tells where the next request would start.
            self.close_client = True
        if self.close_client:
            headers.append((b"connection", b"close"))
        status = event.status_code
        await self._to_client(
            h11.Response(status_code=status, headers=headers, reason=REASONS.get(status, b""))
        )
        while True:
            event = await up.next_event(lambda: self.sent_up)
            if isinstance(event, h11.Data):
                await self._to_client(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await self._to_client(h11.EndOfMessage())
                break
        if not self.body_done:
            raise _ClientGone  # stop the pump; the connection closes after this response

    async def _to_client(self, event: h11.Event) -> None:
        data = self.client.conn.send(event) or b""
        with trio.move_on_after(self.config.read_timeout):
            try:
                await self.client.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise _ClientGone from None
            return
        raise _ClientGone  # the client stopped reading
