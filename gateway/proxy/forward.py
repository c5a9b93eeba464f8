"""Forward one client request to the legacy site and stream the answer back.

The request body is first read whole (``request_buffering``, the default: see
:mod:`gateway.proxy.body`), so a slow client never holds an upstream connection; a route
with buffering off streams it instead.  Then up to two tasks per exchange, so neither
direction waits for the other: the *pump* writes the rest of the request body upstream (from
the spooled file, or from the client one chunk at a time); the *responder* reads the
upstream's answer and writes it to the client.  A small buffered body goes out with the head
in one write and needs no pump.

* Framing is regenerated on both hops (RFC 9112 §6): ``Content-Length`` when known (always,
  for a buffered body), else chunked; h11 enforces it on each side, and HEAD, 204 and 304
  carry no body (§6.3).
* ``Expect: 100-continue`` (RFC 9110 §10.1.1): buffered, the gateway answers ``100`` itself
  when it starts reading the body and the upstream never sees the expectation; streamed, it
  travels upstream with the head, the upstream's ``100`` is relayed to a client still waiting
  for it, and a final answer instead of it is relayed as is (the body the client never sent
  then closes the connection).
* Failures: a body above ``max_body_size`` -> 413 (before connecting when Content-Length says
  so); a malformed or stalled client body -> 400 / 408 (``body_timeout`` for a whole buffered
  body); the upstream refused -> 502, slow -> 504 (:mod:`gateway.proxy.client`).  Those
  answers are only possible while no byte of the response was sent; afterwards the client's
  connection is cut, so a truncated response never looks complete.  Any failure discards the
  upstream connection, and so does anything the upstream sends beyond its response
  (:mod:`gateway.proxy.pool`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11
import trio

from gateway.config.schema import ProxyConfig
from gateway.core import headers as hdr
from gateway.core.decisions import REASONS, Proxy, Reject
from gateway.errors import UpstreamError
from gateway.log import RateLimit
from gateway.proxy import headers as rules
from gateway.proxy.body import (
    TOO_LARGE,
    BufferedBody,
    ClientBody,
    ClientGone,
    Refused,
    read_whole,
)
from gateway.proxy.client import UpstreamConnection, request_state
from gateway.proxy.pool import Pools
from gateway.wire import Wire, count_sent, http_date

__all__ = ["ClientGone", "ClientSide", "ProxyRuntime", "Refused", "forward"]

log = logging.getLogger("gateway.proxy")


# The relayed status line: the upstream's status, our reason phrase (RFC 9112 §4: optional).
_STATUS_LINES = {status: b"HTTP/1.1 %d %s" % (status, r) for status, r in REASONS.items()}

# A full disk must not flood the log once per request.
_spool_failed = RateLimit(burst=1, interval=60.0)


@dataclass
class ProxyRuntime:
    """What forwarding needs at run time: the settings, trusted networks and the pools."""

    config: ProxyConfig
    trusted: tuple[rules.Network, ...]
    pools: Pools

    @classmethod
    def build(cls, config: ProxyConfig, trusted: tuple[rules.Network, ...]) -> ProxyRuntime | None:
        """The runtime for a validated ``[proxy]`` table (its upstreams parsed by the config)
        and the trusted proxies (``Config.trusted_networks``); ``None`` when it names no
        upstream."""
        upstreams = {r.destination for r in config.routes}
        if config.default_upstream is not None:
            upstreams.add(config.default_upstream)
        if not upstreams:
            return None
        pools = Pools(
            upstreams,
            max_idle=config.pool_size,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
        )
        return cls(config, trusted, pools)


@dataclass
class ClientSide:
    """The client's half: its stream and h11 server connection, owned by the HTTP shell.

    ``peer``: its IP address as text (``None`` if unknown); ``close``: end the connection
    after this response (the gateway is draining).  ``status`` and ``upstream_seconds`` are
    filled in for metrics once the upstream answers: the status relayed, and the time from
    taking the upstream connection to its response head (nginx's ``$upstream_header_time``).
    """

    stream: trio.abc.Stream
    conn: h11.Connection
    peer: str | None
    secure: bool = False
    close: bool = False
    wire: Wire | None = None  # the stream's direct writes (plain TCP), if the shell has one
    keep_alive: bool = True  # the request allows another after it (not 1.0, no close)
    method: bytes = b"GET"  # the request's method and HTTP version: they frame the response
    version: bytes = b"1.1"
    answered: bool = False  # the response head went out (written here, not through h11)
    status: int = 0
    upstream_seconds: float | None = None


async def forward(
    client: ClientSide, request: h11.Request, decision: Proxy, runtime: ProxyRuntime
) -> bool:
    """Carry out ``decision`` for ``request``; True when the client connection may go on.

    Raises :class:`~gateway.errors.UpstreamError` (502/504) or :class:`Refused` (413/400/408)
    for the caller to answer, or :class:`ClientGone` (nobody left to answer: just close).  When
    a response had already started they are raised all the same, and the caller's answer is
    skipped (h11's state says it is too late) and the connection closed.
    """
    config = runtime.config
    client.method, client.version = request.method, request.http_version
    request_fields = hdr.pairs(request.headers)  # h11's own list, copied once
    length, chunked = rules.body_framing(request_fields)
    if length is not None and length > config.max_body_size:
        # nginx's client_max_body_size: refuse before any byte goes upstream.
        raise Refused(TOO_LARGE)
    has_body = length != 0 and (length is not None or chunked)
    buffered: BufferedBody | None = None
    if has_body and decision.request_buffering:
        buffered = await _buffer(client, config)
    try:
        head = _outgoing(client, request, request_fields, decision, runtime, buffered)
        if buffered is not None:
            length, chunked = buffered.size, False  # the length is known now
        state = request_state(request.method, length, chunked)
        started = trio.current_time()  # the upstream's latency includes connecting to it
        pool = runtime.pools[decision.upstream]
        up = await pool.acquire()
        completed = False
        try:
            exchange = _Exchange(client, up, config, buffered, started)
            await exchange.start(head, state)
            await exchange.run()
            completed = True
            return exchange.body_done and not exchange.close_client
        finally:
            if not pool.put_back(up, completed=completed):  # pool.py's rules decide reuse
                await up.aclose()
    finally:
        if buffered is not None:
            await buffered.aclose()


async def _buffer(client: ClientSide, config: ProxyConfig) -> BufferedBody:
    """Read the whole body before any upstream work (nginx's ``proxy_request_buffering``)."""
    if client.conn.they_are_waiting_for_100_continue:
        # We are the ones who want the body now (RFC 9110 §10.1.1): ask for it.  The
        # upstream never sees the Expect (nginx clears it the same way).
        await _send_client(client, h11.InformationalResponse(status_code=100, headers=[]), config)
    body = ClientBody(
        client.stream,
        client.conn,
        read_timeout=config.read_timeout,
        deadline=trio.current_time() + config.body_timeout,
    )
    try:
        return await read_whole(
            body,
            max_size=config.max_body_size,
            memory_limit=config.body_buffer_size,
            temp_dir=config.body_temp_dir,
        )
    except OSError as exc:
        # The spool could not be written (disk full...): our fault, not the client's.
        if (dropped := _spool_failed.allow()) is not None:
            log.warning(
                "request body could not be spooled to %s: %s (%d more since the last warning)",
                config.body_temp_dir or "the temporary folder",
                exc,
                dropped,
            )
        raise Refused(Reject(500, "request body could not be stored", close=True)) from None


def _outgoing(
    client: ClientSide,
    request: h11.Request,
    request_fields: rules.Headers,
    decision: Proxy,
    runtime: ProxyRuntime,
    buffered: BufferedBody | None,
) -> bytes:
    """The request head to send upstream, serialised here (see
    :meth:`UpstreamConnection.send_request` for why not by h11)."""
    peer = client.peer
    trusted = runtime.trusted
    headers = rules.request_headers(
        request_fields,
        rules.Client(peer, rules.is_trusted(peer, trusted), client.secure),
        http_version=request.http_version,
        upstream_authority=decision.upstream.authority_bytes,
        preserve_host=runtime.config.preserve_host,
        # Buffered, the length is known: a chunked upload goes upstream with Content-Length
        # (as nginx does), and the expectation was ours to answer.
        body_length=None if buffered is None else buffered.size,
    )
    try:
        # h11 parsed the method and target (a token, visible ASCII) and every field but ours.
        return rules.head(b"%s %s HTTP/1.1" % (request.method, request.target), headers)
    except ValueError:  # cannot happen for what h11 accepted; still never sent
        raise Refused(Reject(400, "request head could not be forwarded", close=True)) from None


async def _send_client(client: ClientSide, event: h11.Event, config: ProxyConfig) -> None:
    await _send_client_bytes(client, client.conn.send(event) or b"", config)


async def _send_client_bytes(client: ClientSide, data: bytes, config: ProxyConfig) -> None:
    """Write ``data`` to the client: at once when the kernel takes it, else within
    ``read_timeout`` (a client that stops reading is gone)."""
    if client.wire is not None:
        try:
            sent = client.wire.send_now(data)
        except trio.BrokenResourceError:
            raise ClientGone from None
        if sent == len(data):
            return
        data = data[sent:]
    with trio.move_on_after(config.read_timeout):
        try:
            await client.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ClientGone from None
        return
    raise ClientGone  # the client stopped reading


class _Exchange:
    """One request/response exchange between ``client`` and the upstream connection ``up``.

    The request body comes from ``buffered`` (read whole beforehand) or, streamed, from the
    client as it arrives.
    """

    def __init__(
        self,
        client: ClientSide,
        up: UpstreamConnection,
        config: ProxyConfig,
        buffered: BufferedBody | None,
        started: float = 0.0,
    ) -> None:
        self.started = started
        self.client = client
        self.up = up
        self.config = config
        self.buffered = buffered
        self.body = ClientBody(client.stream, client.conn, read_timeout=config.read_timeout)
        self.sent_up = 0  # request body bytes written upstream: "progress" for read timeouts
        self.body_done = buffered is not None  # the whole request body was read (and sent)
        self.close_client = client.close
        self.failure: UpstreamError | Refused | ClientGone | None = None
        self._pending: h11.Data | h11.EndOfMessage | None = None
        self._pump_needed = True
        if buffered is None:
            self._look_ahead()  # a request without a body is complete right away

    async def start(self, head: bytes, state: h11.Request) -> None:
        """Send the request head, and with it the body when that is already whole and in
        memory (one write for the common small request)."""
        buffered = self.buffered
        if buffered is not None and buffered.file is None:
            body = bytes(buffered.memory)
            if body:
                self.up.carried_body = True
            await self.up.send_request(head, state, body, end=True)
            self.sent_up = len(body)
            self._pump_needed = False
        elif buffered is None and self.body_done:
            await self.up.send_request(head, state, end=True)  # no body: no pump
            self._pending = None
            self._pump_needed = False
        else:
            await self.up.send_request(head, state)

    async def run(self) -> None:
        """Run the pump (if any body is left to send) and the responder; re-raise the first
        failure (client gone: quietly return, the caller sees ``body_done``/``close_client``
        and closes)."""
        if not self._pump_needed:
            # The request went out whole with its head: the response on this task, without
            # a nursery or a second task (the common exchange).
            try:
                await self._respond()
            except (UpstreamError, Refused, ClientGone) as exc:
                self.failure = exc
        else:
            async with trio.open_nursery() as nursery:
                pump = self._pump_spooled if self.buffered is not None else self._pump
                nursery.start_soon(self._guard, pump, nursery.cancel_scope)
                nursery.start_soon(self._guard, self._respond, nursery.cancel_scope)
        if isinstance(self.failure, ClientGone):
            self.close_client = True
            self.up.broken = True
        elif self.failure is not None:
            raise self.failure

    async def _guard(self, part: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
        try:
            await part()
        except (UpstreamError, Refused, ClientGone) as exc:
            self.failure = self.failure or exc
            scope.cancel()

    # -- client -> upstream -------------------------------------------------------------------

    async def _pump_spooled(self) -> None:
        assert self.buffered is not None
        self.up.carried_body = True
        async for piece in self.buffered.chunks():
            await self.up.send(h11.Data(data=piece))
            self.sent_up += len(piece)
        await self.up.send(h11.EndOfMessage())
        await self.buffered.aclose()  # sent: the spool is not needed for the response

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
                raise Refused(TOO_LARGE)
            self.up.carried_body = True
            await self.up.send(h11.Data(data=event.data))

    def _look_ahead(self) -> None:
        """Take the client's next body event if h11 has it without reading, so
        ``body_done`` is set as soon as the body's end is known: the upstream may answer
        right after our last write, before the pump's next turn."""
        if self._pending is not None or self.body_done:
            return
        event = self.body.ready()
        if event is not None:
            self._pending = event
            self.body_done = isinstance(event, h11.EndOfMessage)

    async def _client_event(self) -> h11.Data | h11.EndOfMessage:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._look_ahead()
            return pending
        event = await self.body.next()
        self.body_done = isinstance(event, h11.EndOfMessage)
        self._look_ahead()
        return event

    # -- upstream -> client -------------------------------------------------------------------

    async def _respond(self) -> None:
        up = self.up
        while True:
            event = await up.next_event(lambda: self.sent_up)
            if type(event) is h11.Response:  # (exact types: h11's events are ABCs, slow)
                break
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    raise UpstreamError("upstream switched protocols unasked")
                if event.status_code == 100 and self.client.conn.they_are_waiting_for_100_continue:
                    await self._to_client(h11.InformationalResponse(status_code=100, headers=[]))
                continue  # other 1xx (103 Early Hints...) are dropped: optional (RFC 9110 §15.2)
            raise UpstreamError("unexpected event from upstream")
        self.client.upstream_seconds = trio.current_time() - self.started
        self.client.status = event.status_code
        headers = rules.response_headers(
            hdr.pairs(event.headers),
            http_version=event.http_version,
            date=http_date(),
        )
        client = self.client
        status = event.status_code
        framer = _Framer(client.method, client.version, status, headers)
        if not self.body_done:
            # The request body is not all read (the upstream answered early, or refused an
            # Expect: 100-continue): nothing tells where the next request would start.
            self.close_client = True
        if framer.must_close or not client.keep_alive:
            self.close_client = True
        if self.close_client:
            headers.append((b"connection", b"close"))
        try:
            head = rules.head(_STATUS_LINES.get(status) or b"HTTP/1.1 %d " % status, headers)
        except ValueError:  # h11 parsed these fields, so this cannot happen; still never sent
            raise UpstreamError("upstream response head could not be relayed") from None
        # The head (written here, not by h11: the client's h11 starts afresh for the next
        # request) and whatever of the body is already in h11's buffer (at most one read):
        # one write for a response that came in one read, the usual small page.
        client.answered = True
        out = [head]
        done = False
        while not done and (ready := up.next_ready()) is not None:
            if type(ready) is h11.Data:
                out.append(framer.data(ready.data))
            elif type(ready) is h11.EndOfMessage:
                out.append(framer.end())
                done = True
        await self._write(b"".join(out), status)
        while not done:
            event = await up.next_event(lambda: self.sent_up)
            if type(event) is h11.Data:
                await self._write(framer.data(event.data), status)
            elif type(event) is h11.EndOfMessage:
                await self._write(framer.end(), status)
                break
        if not self.body_done:
            raise ClientGone  # stop the pump; the connection closes after this response

    async def _to_client(self, event: h11.Event) -> None:
        await _send_client(self.client, event, self.config)

    async def _write(self, data: bytes, status: int) -> None:
        count_sent(self.client.conn, status, len(data))  # the access log's byte count
        await _send_client_bytes(self.client, data, self.config)


class _Framer:
    """The relayed body's framing towards the client, regenerated as h11 frames a response
    (RFC 9112 §6.3): the upstream's Content-Length when it gave one (its h11 held the body
    to it, and so does :meth:`data` here), else chunked to an HTTP/1.1 client and
    close-delimited to an HTTP/1.0 one (``must_close``); no body for HEAD, 204 and 304.
    Adds ``Transfer-Encoding: chunked`` to ``headers`` when it chunks."""

    __slots__ = ("left", "mode", "must_close")

    def __init__(
        self, method: bytes, version: bytes, status: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        length = next((int(v) for n, v in headers if n == b"content-length"), None)
        self.must_close = False
        self.left = 0
        if status in (204, 304):
            self.mode = "none"
        elif length is not None:
            self.mode = "none" if method == b"HEAD" else "length"
            self.left = length
        elif version >= b"1.1":
            headers.append((b"transfer-encoding", b"chunked"))
            self.mode = "none" if method == b"HEAD" else "chunked"
        else:
            self.mode = "none" if method == b"HEAD" else "close"
            self.must_close = self.mode == "close"

    def data(self, data: bytes) -> bytes:
        if self.mode == "chunked":
            return b"%x\r\n%s\r\n" % (len(data), data) if data else b""
        if self.mode == "none":
            if data:
                raise UpstreamError("upstream sent a body where none may be")
            return b""
        if self.mode == "length":
            self.left -= len(data)
            if self.left < 0:
                raise UpstreamError("upstream body longer than its Content-Length")
        return data

    def end(self) -> bytes:
        if self.mode == "chunked":
            return b"0\r\n\r\n"
        if self.mode == "length" and self.left:
            raise UpstreamError("upstream body shorter than its Content-Length")
        return b""
