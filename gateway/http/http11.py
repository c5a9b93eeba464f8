"""One client connection's HTTP/1.1 life: h11 <-> a trio stream, and carrying out decisions.

The loop reads one request head at a time (within a deadline), asks the pure front door what to
do (:func:`gateway.core.frontdoor.classify`) and does it: a fixed response, a static file, the
health probe, the proxy, or destroying the socket.  A request the front door says to upgrade
ends the loop: :meth:`HTTPConnection.serve` returns it, with the stream still open, to the
WebSocket seam (:mod:`gateway.upgrade`, which drives this module, never the reverse); the seam
answers a refused handshake through :meth:`HTTPConnection.refuse`.

Deadlines (``[http]``): the first request head must be complete within ``head_timeout`` of the
accept; between requests a keep-alive connection may stay idle ``keepalive_timeout``; once a
later request's first byte arrives its head has ``head_timeout``.  A head that is started but
not finished in time gets 408; an idle connection is just closed.  A WebSocket handshake has
its mount's ``handshake_timeout`` from the first byte of the request that carries the upgrade
(not from the accept: an upgrade on an older keep-alive connection is served).
"""

from __future__ import annotations

import contextlib
import logging
import time
from email.utils import formatdate
from pathlib import Path

import h11
import trio
from h11._state import MIGHT_SWITCH_PROTOCOL  # not in h11's __all__
from trio_websocket import Endpoint

from gateway import access
from gateway.app import FIRST_REQUEST_GRACE, App
from gateway.client_limits import Slot
from gateway.core import frontdoor, handshake
from gateway.core import headers as hdr
from gateway.core.decisions import (
    Decision,
    Destroy,
    Health,
    Proxy,
    Reject,
    Static,
    Upgrade,
)
from gateway.errors import UpstreamError
from gateway.http import static
from gateway.log import Limited, RateLimit, safe
from gateway.proxy import forward
from gateway.proxy.body import ClientGone
from gateway.stats import CLIENT_GONE, HEALTH, PROXY, REJECT, STATIC, count_refusal, route_label
from gateway.wire import Wire, count_sent, response_head

log = logging.getLogger("gateway.http")
# A failing upstream is hit by every client's request: its warnings are limited too.
_upstream_errors = Limited(log, {"upstream": RateLimit(burst=10, interval=10.0)})

RECEIVE_SIZE = 65536
_SERVER = (b"server", b"gateway")


class _Timeout(Exception):
    """The deadline passed; ``started`` says whether part of a request had arrived."""

    def __init__(self, started: bool) -> None:
        self.started = started


class HTTPConnection:
    """Serves one accepted connection; owns ``stream`` until it hands it to a WebSocket."""

    def __init__(
        self,
        app: App,
        stream: trio.abc.Stream,
        *,
        remote: Endpoint | None,
        secure: bool = False,
        slot: Slot | None = None,
    ) -> None:
        self.app = app
        self.stream = stream
        self.remote = remote
        self.secure = secure
        self.slot = slot  # this connection's per-client place (gateway.client_limits)
        self.http = app.config.http
        # [log] access: a connection that measures what it sends (gateway.access)
        connection = h11.Connection if app.access is None else access.CountingConnection
        self.conn = connection(h11.SERVER, max_incomplete_event_size=self.http.max_head_bytes)
        self.peer = None if remote is None else remote.address  # trusted proxies' headers
        self._access: tuple[h11.Request, Decision, access.AccessLog] | None = None
        self._proxied = False  # the current request went upstream (a static miss may)
        self.wire = Wire(stream)
        # Set when our own answer went out without h11 (one write, a head built by us); h11
        # then starts afresh for the next request (_fresh_cycle).
        self._answered = False
        self._keep_alive = True  # the current request allows another after it
        self._served = 0  # requests read on this connection
        self._peer_text: str | None = None  # the client's address as text, for the proxy
        self._client_side: forward.ClientSide | None = None  # the proxy's, for this request
        self._accepted_at = trio.current_time()
        # The current request's first byte (a handshake's deadline counts from it).
        self.request_started_at = self._accepted_at
        self._method = b""
        self._status = 0  # the status of the response sent last (for metrics)

    @property
    def remote_text(self) -> str:
        if self.remote is None:
            return "-"
        address = self.remote.address
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"{host}:{self.remote.port}"

    async def serve(self) -> tuple[h11.Request, Upgrade] | None:
        """Serve requests until the connection closes (``None``: the stream is closed) or a
        request asks to upgrade: then that request and the front door's decision are returned,
        the stream still open and this connection's to answer a refusal with (:meth:`refuse`)."""
        upgrading = None
        try:
            upgrading = await self._loop()
        finally:
            if self._access is not None:
                self._access_line()
            if upgrading is None:
                with trio.CancelScope(shield=True):
                    await self.stream.aclose()
        return upgrading

    async def _loop(self) -> tuple[h11.Request, Upgrade] | None:
        for count in range(self.http.max_requests_per_connection):
            try:
                request = await self._next_request(first=count == 0)
            except _Timeout as exc:
                if exc.started:
                    await self._send_simple(Reject(408, "request head timed out", close=True))
                    self.app.stats.http[REJECT, 408] += 1
                return None
            except h11.RemoteProtocolError as exc:
                await self._protocol_error(exc)
                self.app.stats.http[REJECT, self._status] += 1
                return None
            if request is None:
                return None
            decision = frontdoor.classify(
                request, self.app.policy, secure=self.secure, peer=self.peer
            )
            if isinstance(decision, Upgrade):
                return request, decision
            if isinstance(decision, Destroy):
                self.app.stats.destroyed += 1
                access.refusals.log(
                    "destroyed",
                    logging.INFO,
                    "destroyed: %s",
                    decision.reason,
                    remote=self.remote_text,
                    path=safe(request.target.decode("ascii", "replace")),
                )
                await _abort(self.stream)
                return None
            if self.app.access is not None:  # [log] access: written when the answer is out
                self._access_begin(request, decision, self.app.access)
            if isinstance(decision, Reject):
                if handshake.is_websocket_upgrade(request):  # a handshake the front door refused
                    self._log_refused(request, decision)
                await self._send_simple(decision)
                count_refusal(self.app, request, decision.status)
            elif isinstance(decision, Health):
                await self._health(decision)
                self.app.stats.http[HEALTH, self._status] += 1
            elif isinstance(decision, Static):
                if not await self._static(request, decision):
                    return None
            elif isinstance(decision, Proxy) and not await self._proxy(request, decision):
                return None
            if not await self._finish_cycle():
                return None
        return None

    # -- reading ------------------------------------------------------------------------------

    async def _next_request(self, *, first: bool) -> h11.Request | None:
        """The next request head, ``None`` if the client closed cleanly between requests."""
        self._method = b""
        self._answered = False
        self._client_side = None
        if first:
            deadline = self._accepted_at + self.http.head_timeout
        else:
            # The one schedule point of a request whose bytes are all waiting in the kernel
            # (reads and writes below skip trio when they need not wait): others run too.
            await trio.lowlevel.checkpoint()
            deadline = trio.current_time() + self.http.keepalive_timeout
        started = False
        if self.conn.trailing_data[0]:
            # Pipelined bytes already here: this request starts now, as we turn to it.
            self.request_started_at = trio.current_time()
        while True:
            event = self.conn.next_event()
            if isinstance(event, h11.Request):
                self._method = event.method
                self._served += 1
                # The last request this connection may serve is answered with a close, so
                # the client does not send another into the closing (RFC 9112 §9.6).
                last = self._served >= self.http.max_requests_per_connection
                self._keep_alive = _keep_alive(event) and not last
                return event
            if isinstance(event, h11.ConnectionClosed):
                return None
            if event is not h11.NEED_DATA:
                raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}", 400)
            if not started and self.conn.trailing_data[0]:
                # The first byte of a later request: its head now has head_timeout.
                started = True
                if not first:
                    deadline = trio.current_time() + self.http.head_timeout
            # Waiting for a request's first byte: at shutdown a keep-alive connection closes at
            # once, a fresh one gets FIRST_REQUEST_GRACE for its request (it may be a handshake
            # in flight, which then gets its 503).
            idle = not self.conn.trailing_data[0]
            ready = self.wire.receive_now(RECEIVE_SIZE)
            if ready is not None:  # already here: no deadline to set, no wait
                if idle and ready:
                    self.request_started_at = trio.current_time()
                self.conn.receive_data(ready)
                continue
            if idle and self.app.stopping:
                if not first:
                    return None
                deadline = min(deadline, trio.current_time() + FIRST_REQUEST_GRACE)
            with trio.move_on_at(deadline) as timer:
                if idle:
                    self.app.idle_http[timer] = first  # App.start_draining shortens it
                try:
                    data = await self._receive()
                finally:
                    self.app.idle_http.pop(timer, None)
                if idle and data:
                    self.request_started_at = trio.current_time()
                self.conn.receive_data(data)
                continue
            if idle and self.app.stopping:
                return None
            raise _Timeout(started or bool(self.conn.trailing_data[0]))

    async def _receive(self) -> bytes:
        return await self.wire.receive(RECEIVE_SIZE)

    async def _finish_cycle(self) -> bool:
        """Drain the request body (bounded) and reset h11 for the next request on this
        connection; ``False`` when the connection must close instead."""
        if self._access is not None:
            self._access_line()
        conn = self.conn
        if self._outside_h11():  # our own answer: its keep-alive decision is ours
            if not self._keep_alive:
                return False
        elif conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            return False
        if self.app.draining:
            return False  # shutting down: no further requests on this connection
        remaining = self.http.max_body_size
        # The usual request (no body, or a body already here) ends without a wait.
        remaining = self._drain_ready(remaining)
        if remaining < 0:
            return False
        if conn.their_state is h11.SEND_BODY:
            with trio.move_on_after(self.http.head_timeout) as scope:
                while conn.their_state is h11.SEND_BODY:
                    data = await self._receive()
                    if not data:
                        return False
                    conn.receive_data(data)
                    remaining = self._drain_ready(remaining)
                    if remaining < 0:
                        return False
            if scope.cancelled_caught:
                return False
        if self._outside_h11():
            return self._fresh_cycle()
        if conn.our_state is not h11.DONE:
            return False
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            return False
        return True

    def _outside_h11(self) -> bool:
        """The response went out without h11: our own answer, or the proxy's relayed head."""
        client = self._client_side
        return self._answered or (client is not None and client.answered)

    def _drain_ready(self, remaining: int) -> int:
        """Read the request body events h11 has without reading; the body bytes left of
        ``remaining``, negative when the connection must close (too much, or malformed)."""
        conn = self.conn
        while conn.their_state is h11.SEND_BODY:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return -1  # a malformed body after our answer: just close
            if event is h11.NEED_DATA:
                break
            if isinstance(event, h11.Data):
                remaining -= len(event.data)
                if remaining < 0:
                    return -1
        return remaining

    def _fresh_cycle(self) -> bool:
        """After an answer sent without h11: a new h11 connection (of the same class) for the
        next request, given the bytes the client already sent beyond this one.  Only when the
        request is complete and allowed another (h11's DONE, not MUST_CLOSE)."""
        old = self.conn
        # MIGHT_SWITCH_PROTOCOL: an upgrade request we answered without a 101, which refuses
        # the switch (h11 would set DONE on seeing our response).
        if old.their_state is not h11.DONE and old.their_state is not MIGHT_SWITCH_PROTOCOL:
            return False
        data, closed = old.trailing_data
        self.conn = type(old)(h11.SERVER, max_incomplete_event_size=self.http.max_head_bytes)
        if data:
            self.conn.receive_data(bytes(data))
        if closed:
            self.conn.receive_data(b"")
        return True

    # -- logging ------------------------------------------------------------------------------

    def _access_begin(
        self, request: h11.Request, decision: Decision, log_access: access.AccessLog
    ) -> None:
        self._access = (request, decision, log_access)
        self._proxied = False
        if isinstance(self.conn, access.CountingConnection):
            self.conn.reset()

    def _access_line(self) -> None:
        """The access line of the request just answered (or given up on)."""
        assert self._access is not None
        request, decision, log_access = self._access
        self._access = None
        conn = self.conn if isinstance(self.conn, access.CountingConnection) else None
        upstream = None
        if isinstance(decision, Proxy):
            upstream = decision.upstream
        elif isinstance(decision, Static) and decision.fallback is not None and self._proxied:
            upstream = decision.fallback.upstream
        log_access.request(
            method=request.method,
            target=request.target,
            status=None if conn is None else conn.status,
            sent=None if conn is None else conn.sent,
            duration=trio.current_time() - self.request_started_at,
            remote=self.remote_text,
            upstream=None if upstream is None else str(upstream),
        )

    def _log_refused(self, request: h11.Request, reject: Reject, mount: str | None = None) -> None:
        """A handshake answered with ``reject`` (rate-limited; the Origin with a 403)."""
        origins = hdr.values(request.headers, b"origin")
        access.refused(
            remote=self.remote_text,
            target=request.target,
            status=reject.status,
            detail=reject.detail,
            origin=hdr.text(origins[0]) if origins else None,
            mount=mount,
        )

    # -- answering ----------------------------------------------------------------------------

    async def _send(self, *events: h11.Event) -> None:
        data = b"".join(self.conn.send(e) or b"" for e in events)
        await self.wire.send(data)

    async def _answer(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *, close: bool = False
    ) -> None:
        """Our own complete response: head (built here, not by h11) and body in one write.
        h11 is told nothing; :meth:`_fresh_cycle` gives the next request a new one."""
        if close or self.app.draining or not self._keep_alive:
            headers.append((b"connection", b"close"))  # as h11 would (RFC 9112 §9.6)
            self._keep_alive = False
        data = response_head(status, headers)
        if self._method != b"HEAD":
            data += body
        self._answered = True
        self._counted(status, len(data))
        try:
            await self.wire.send(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client left; nothing to tell it

    def _counted(self, status: int, sent: int) -> None:
        count_sent(self.conn, status, sent)  # for a counting h11 connection (access log)

    async def _send_simple(self, reject: Reject, body: bytes | None = None) -> None:
        """A complete response with a short text body (the detail, fixed text from the core)."""
        if self._outside_h11() or self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # a response already started: too late to answer, just close
        payload = (reject.detail + "\n").encode() if body is None else body
        await self.respond(reject.status, reject.headers, payload, close=reject.close)

    async def respond(
        self,
        status: int,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
        *,
        close: bool = False,
        content_type: bytes = b"text/plain; charset=utf-8",
    ) -> None:
        h = [
            _SERVER,
            (b"date", _date()),
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
        ]
        h.extend((n.encode("ascii"), v.encode("latin-1")) for n, v in headers)
        self._status = status
        await self._answer(status, h, body, close=close)

    async def _protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        # h11's hint is 400 for malformed heads and 431 when an incomplete head outgrew
        # max_head_bytes; if the request line alone is that long, the answer is 414.
        status = exc.error_status_hint if exc.error_status_hint in (400, 431) else 400
        detail = "malformed request"
        if status == 431:
            buffered = self.conn.trailing_data[0]
            if b"\n" not in buffered[: self.http.max_request_line]:
                status, detail = 414, "request line too long"
            else:
                detail = "request head too large"
        await self._send_simple(Reject(status, detail, close=True))

    async def _health(self, decision: Health) -> None:
        if decision.ready and not self.app.ready:  # draining, or a required broker is down
            reason = b"draining\n" if self.app.draining else b"broker not connected\n"
            await self.respond(503, (("Cache-Control", "no-store"),), reason)
        else:
            await self.respond(200, (("Cache-Control", "no-store"),), b"ok\n")

    async def _static(self, request: h11.Request, decision: Static) -> bool:
        """Serve the file; a miss is 404, or proxied when the decision has a fallback.
        ``False`` when the connection must close (a proxied exchange said so)."""
        root = self.app.static_root
        found = None
        if root is not None:
            cache = _static_cache(root, self.http.index_file)
            found = await cache.open(decision.path, request.method, request.headers)
        if found is None:
            if decision.fallback is not None:
                self._proxied = True  # for the access line: this static miss went upstream
                return await self._proxy(request, decision.fallback)
            await self._send_simple(frontdoor.NOT_FOUND)
            self.app.stats.http[STATIC, 404] += 1
            return True
        self.app.stats.http[STATIC, found.status] += 1
        headers = [_SERVER, (b"date", _date()), *found.headers]
        if found.send_body and found.body is None:
            await self._send_file(found, headers)  # a large file, from disk
        else:  # HEAD, 304, or a small file from the cache: one write
            await self._answer(found.status, headers, found.body or b"")
        return True

    async def _send_file(
        self, found: static.StaticFile, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """The head, then the file: ``os.sendfile`` on plain TCP, else read and written."""
        if self.app.draining or not self._keep_alive:
            headers.append((b"connection", b"close"))
            self._keep_alive = False
        head = response_head(found.status, headers)
        self._answered = True
        self._counted(found.status, len(head) + found.size)
        await self.wire.send(head)
        sent = 0
        try:
            if self.wire.fd >= 0:
                sent = await static.send_file(self.wire.fd, found.path, found.size)
            else:
                chunks = static.iter_file(found.path, limit=found.size)
                async with contextlib.aclosing(chunks):
                    async for chunk in chunks:
                        sent += len(chunk)
                        await self.wire.send(chunk)
        except OSError:
            pass  # gone since the stat, or unreadable: the body is short, handled below
        if sent != found.size:
            # The file shrank under us: a short body must not look complete.
            raise trio.BrokenResourceError("static file changed while being sent")

    async def _proxy(self, request: h11.Request, decision: Proxy) -> bool:
        """Forward to the legacy site (:mod:`gateway.proxy.forward`); answer its failures
        (502/504/413/...) while no response has started, else the connection is cut.
        ``True`` when the connection may serve another request."""
        runtime = self.app.proxy
        if runtime is None:  # a Proxy decision implies a [proxy] table; be safe anyway
            await self._send_simple(frontdoor.NOT_FOUND)
            return True
        limited = self.app.limits.check_request(self.remote, request.headers)  # [limits]
        if limited is not None:
            await self._send_simple(limited)
            self.app.stats.http[PROXY, limited.status] += 1
            return True
        peer = self._peer_text
        if peer is None and self.remote is not None:
            peer = self._peer_text = str(self.remote.address)  # once per connection
        client = forward.ClientSide(
            self.stream,
            self.conn,
            peer,
            self.secure,
            self.app.draining,
            wire=self.wire,
            keep_alive=self._keep_alive,
        )
        self._client_side = client
        self._status = 0
        try:
            return await forward.forward(client, request, decision, runtime)
        except UpstreamError as exc:
            _upstream_errors.log(
                "upstream",
                logging.WARNING,
                "proxy %s %s -> %s: %s",
                self.remote_text,
                safe(request.target.decode("ascii", "replace")),
                decision.upstream,
                exc.detail,
                remote=self.remote_text,
                upstream=str(decision.upstream),
            )
            await self._send_simple(Reject(exc.status, exc.detail, close=True))
        except forward.Refused as exc:
            await self._send_simple(exc.reject)
        except ClientGone:
            pass  # the client left (EOF mid-body): nobody to answer; the connection closes
        finally:
            # Metrics: the status the client got (the upstream's, or ours), and the time the
            # upstream took to answer, by route (a bounded label: a configured prefix).
            status = client.status or self._status or CLIENT_GONE
            self.app.stats.http[PROXY, status] += 1
            route = self.app.stats.route(route_label(self.app.policy.proxy, decision.path))
            route.statuses[status] += 1
            if client.upstream_seconds is not None:
                route.latency.observe(client.upstream_seconds)
        return False

    # -- for the WebSocket seam ----------------------------------------------------------------

    async def refuse(
        self, reject: Reject, request: h11.Request | None = None, mount: str | None = None
    ) -> None:
        """Answer a handshake the seam refused (logged, rate-limited, when ``request`` is
        given); the connection then ends."""
        if request is not None:
            self._log_refused(request, reject, mount)
        self._keep_alive = False  # the seam closes after any refusal: say so (RFC 9112 §9.6)
        await self._send_simple(reject)

    def trailing_data(self) -> bytes:
        """The bytes the client sent behind the request h11 returned last (a WebSocket's
        first frames, once the request was an upgrade: h11 parses no further)."""
        return bytes(self.conn.trailing_data[0])


async def _abort(stream: trio.abc.Stream) -> None:
    """Close without a response.  (A RST would need SO_LINGER 0; a plain close sends FIN, and
    the client reads zero bytes either way.)"""
    with trio.CancelScope(shield=True):
        await stream.aclose()


_static_caches: dict[tuple[Path, str], static.StaticCache] = {}


def _static_cache(root: Path, index_file: str) -> static.StaticCache:
    """The process's cache for a static root (one per root and index file name)."""
    cache = _static_caches.get((root, index_file))
    if cache is None:
        cache = _static_caches[root, index_file] = static.StaticCache(root, index_file)
    return cache


_date_cache: tuple[int, bytes] = (0, b"")


def _date() -> bytes:
    """RFC 9110 §6.6.1 Date, formatted at most once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode("ascii"))
    return _date_cache[1]


def _keep_alive(request: h11.Request) -> bool:
    """Whether another request may follow this one (RFC 9112 §9.3), as h11 decides it: not
    after HTTP/1.0, nor after a ``Connection: close``."""
    if request.http_version < b"1.1":
        return False
    return b"close" not in hdr.tokens(request.headers, b"connection")
