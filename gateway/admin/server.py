"""The admin listener (``[admin] listen``): ``/metrics``, the status page and its live feed.

A second listener, never the public port (the loader refuses the same address), so
``/metrics`` is reachable where operators put it and nowhere else.  It serves:

* ``GET /metrics``: the Prometheus text format (OpenMetrics when the scraper asks for it);
* ``GET /``: the status page (``page.html``: plain HTML, CSS and JavaScript, no build step);
* ``GET /live`` with ``Upgrade: websocket``: the page's feed, one JSON message a second: the
  chart history on connect, then the current :func:`~gateway.admin.status.snapshot` and a
  chart point each second.

Where the numbers come from is a :class:`Source`: this process's collector, or with
``--workers`` the supervisor's merge of every worker's scrape (:mod:`gateway.admin.workers`).
One sampler task reads it each second for the charts and every open page.

Hardening for a listener that is usually on loopback: the ``Host`` must be a loopback name
when the listener is on loopback (DNS rebinding), the feed's ``Origin`` must be the page's own
(cross-site WebSocket hijacking), at most :data:`MAX_CONNECTIONS` connections and
:data:`MAX_FEEDS` live pages at once, every request head within :data:`HEAD_TIMEOUT`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from importlib import resources
from typing import Protocol

import h11
import trio
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from trio_websocket import ConnectionClosed

from gateway.admin import status
from gateway.admin.collector import exposition
from gateway.config.schema import Config
from gateway.core import handshake, origin
from gateway.core import headers as hdr
from gateway.core.address import parse_listen
from gateway.core.decisions import REASONS, Reject
from gateway.errors import ConfigError
from gateway.ws.connection import WebSocketConnection
from gateway.ws.limits import Limits

log = logging.getLogger("gateway.admin")

MAX_CONNECTIONS = 64
MAX_FEEDS = 16
HEAD_TIMEOUT = 10.0
SAMPLE_INTERVAL = 1.0  # seconds between chart points (and feed messages)
MAX_HEAD = 16 * 1024
FEED_LIMITS = Limits(max_message_size=4096, inbound_queue=4, ping_interval=20.0)
_SECURITY = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
]
PAGE_POLICY = (
    b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    b"connect-src 'self'; img-src data:; frame-ancestors 'none'; base-uri 'none'"
)


class Source(Protocol):
    """Where the numbers come from."""

    async def families(self) -> list[Metric]:
        """The metric families of a scrape now."""
        ...


class LocalSource:
    """This process's registry (:func:`gateway.admin.collector.registry`)."""

    def __init__(self, registry: Collector) -> None:
        self.registry = registry

    async def families(self) -> list[Metric]:
        return list(self.registry.collect())


class _Families(Collector):
    """A fixed list of families, for the encoder."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def page() -> bytes:
    return resources.files("gateway.admin").joinpath("page.html").read_bytes()


def allowed_hosts(listen: str, server_hosts: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The ``Host`` names the admin listener answers: the loopback names on a loopback
    address; elsewhere ``server.hosts`` plus the listen address itself, or any."""
    host = parse_listen(listen)[0]
    loopback = origin.default_hosts((host,))
    if loopback is not None:
        return loopback
    if server_hosts is None:
        return None
    own = origin.normalize_host_pattern(f"[{host}]" if ":" in host else host)
    return (*server_hosts, own) if own is not None else server_hosts


class AdminServer:
    """Serves the admin listener; see the module docstring."""

    def __init__(self, source: Source, *, hosts: tuple[str, ...] | None) -> None:
        self.source = source
        self.hosts = hosts
        self.history = status.History()
        self.latest: status.Json | None = None
        self._tick = trio.Event()  # set (and replaced) after each sample
        self._connections = 0
        self._feeds = 0
        self._page = page()

    async def serve(
        self,
        listeners: Sequence[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Sample and serve until cancelled (the listeners are closed on the way out)."""
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._sampler)
                for listener in listeners:
                    nursery.start_soon(self._accept, listener, nursery)
                task_status.started(urls(listeners))
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    # -- sampling -------------------------------------------------------------------------

    async def _sampler(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await self.sample()
        task_status.started()
        while True:
            await trio.sleep(SAMPLE_INTERVAL)
            await self.sample()

    async def sample(self) -> status.Json:
        """Read the source now: the latest snapshot, one more chart point; wake the feeds."""
        snap = status.snapshot(await self.source.families(), time.time())
        self.history.add(snap)
        self.latest = snap
        self._tick.set()
        self._tick = trio.Event()
        return snap

    # -- connections ----------------------------------------------------------------------

    async def _accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                log.warning("admin: accept failed (%s); retrying in 0.1s", exc)
                await trio.sleep(0.1)
                continue
            if self._connections >= MAX_CONNECTIONS:
                await trio.aclose_forcefully(stream)
                continue
            self._connections += 1
            nursery.start_soon(self._connection, stream)

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            await self._serve_http(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass  # the client left, or broke HTTP after its answer: nothing to say
        finally:
            self._connections -= 1
            await trio.aclose_forcefully(stream)

    async def _serve_http(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        while True:
            request = None
            with trio.move_on_after(HEAD_TIMEOUT):
                request = await _next_request(stream, conn)
            if request is None:
                return  # closed, or no request in time
            feed = await self._answer(stream, conn, request)
            if feed is not None:
                await self._feed(stream, feed)
                return
            if conn.our_state is h11.MUST_CLOSE or not await _drain(stream, conn):
                return
            conn.start_next_cycle()

    async def _answer(
        self, stream: trio.SocketStream, conn: h11.Connection, request: h11.Request | Reject
    ) -> bytes | None:
        """Answer ``request``; for an accepted feed, the bytes that came behind the
        handshake (``None`` otherwise)."""
        if isinstance(request, Reject):
            await _respond(stream, conn, request.status, request.detail.encode() + b"\n")
            return None
        path = hdr.split_target(request.target)[0]
        hosts = hdr.values(request.headers, b"host")
        if self.hosts is not None and not (
            hosts and origin.host_allowed(hdr.text(hosts[0]), self.hosts)
        ):
            await _respond(stream, conn, 400, b"host not allowed\n", close=True)
            return None
        if handshake.is_websocket_upgrade(request):
            return await self._upgrade(stream, conn, request, path)
        if request.method not in (b"GET", b"HEAD"):
            await _respond(stream, conn, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
            return None
        if path == b"/metrics":
            accept = b", ".join(hdr.values(request.headers, b"accept")).decode("latin-1")
            body, content_type = exposition(_Families(await self.source.families()), accept)
            await _respond(
                stream, conn, 200, body, content_type=content_type.encode(), head=request
            )
        elif path == b"/":
            extra = [(b"content-security-policy", PAGE_POLICY), (b"x-frame-options", b"DENY")]
            await _respond(
                stream,
                conn,
                200,
                self._page,
                extra,
                content_type=b"text/html; charset=utf-8",
                head=request,
            )
        else:
            await _respond(stream, conn, 404, b"not found (try / or /metrics)\n", head=request)
        return None

    async def _upgrade(
        self, stream: trio.SocketStream, conn: h11.Connection, request: h11.Request, path: bytes
    ) -> bytes | None:
        if path != b"/live":
            await _respond(stream, conn, 404, b"no WebSocket here\n", close=True)
            return None
        info = handshake.validate(request)
        if isinstance(info, Reject):
            await _respond(stream, conn, info.status, info.detail.encode() + b"\n", close=True)
            return None
        # Cross-site WebSocket hijacking: only the page itself (same origin) may listen in.
        denied = origin.check(
            info.origin, host=info.host, secure=False, allowed=None, require=False
        )
        if denied is not None:
            await _respond(stream, conn, 403, b"origin not allowed\n", close=True)
            return None
        if self._feeds >= MAX_FEEDS:
            await _respond(stream, conn, 503, b"too many live pages\n", close=True)
            return None
        response = h11.InformationalResponse(
            status_code=101,
            headers=[
                (b"upgrade", b"websocket"),
                (b"connection", b"Upgrade"),
                (b"sec-websocket-accept", handshake.accept_key(info.key)),
            ],
            reason=REASONS[101],
        )
        await stream.send_all(conn.send(response) or b"")
        return bytes(conn.trailing_data[0])

    async def _feed(self, stream: trio.SocketStream, trailing: bytes) -> None:
        """The status page's WebSocket: the history now, then a snapshot and a point a
        second, until the page goes away."""
        ws = WebSocketConnection(stream, path="/live", limits=FEED_LIMITS, trailing_data=trailing)
        self._feeds += 1
        try:
            await ws.serve(lambda: self._send_feed(ws))
        finally:
            self._feeds -= 1

    async def _send_feed(self, ws: WebSocketConnection) -> None:
        try:
            snap = status.snapshot(await self.source.families(), time.time())  # fresh
            await ws.send_message(
                json.dumps({"history": list(self.history.points), "snapshot": snap})
            )
            while True:
                await self._tick.wait()
                latest = self.latest
                if latest is not None and self.history.points:
                    message = {"point": self.history.points[-1], "snapshot": latest}
                    await ws.send_message(json.dumps(message))
        except ConnectionClosed:
            pass  # the page went away: nothing to clean up
        await ws.aclose()


def urls(listeners: Sequence[trio.SocketListener]) -> list[str]:
    found = []
    for listener in listeners:
        host, port = listener.socket.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        found.append(f"http://{host}:{port}")
    return found


async def _next_request(
    stream: trio.SocketStream, conn: h11.Connection
) -> h11.Request | Reject | None:
    """The next request head (``None``: the client closed); a malformed one is a 400."""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            status = 431 if exc.error_status_hint == 431 else 400
            return Reject(status, "malformed request", close=True)
        if isinstance(event, h11.Request):
            return event
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
            continue
        return None  # ConnectionClosed, or anything else: end


async def _drain(stream: trio.SocketStream, conn: h11.Connection) -> bool:
    """Read the (ignored) request body so the next request can be parsed; bounded."""
    remaining = MAX_HEAD
    with trio.move_on_after(HEAD_TIMEOUT):
        while conn.their_state is h11.SEND_BODY:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = bytes(await stream.receive_some(65536))
                if not data:
                    return False
                conn.receive_data(data)
            elif isinstance(event, h11.Data):
                remaining -= len(event.data)
                if remaining < 0:
                    return False
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE
    return False


async def _respond(
    stream: trio.SocketStream,
    conn: h11.Connection,
    status: int,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
    *,
    content_type: bytes = b"text/plain; charset=utf-8",
    close: bool = False,
    head: h11.Request | None = None,
) -> None:
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    headers = [
        (b"server", b"gateway-admin"),
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *_SECURITY,
        *(extra or []),
    ]
    if close:
        headers.append((b"connection", b"close"))
    events: list[h11.Event] = [
        h11.Response(status_code=status, headers=headers, reason=REASONS[status])
    ]
    if head is None or head.method != b"HEAD":
        events.append(h11.Data(data=body))
    events.append(h11.EndOfMessage())
    await stream.send_all(b"".join(conn.send(e) or b"" for e in events))


async def open_listeners(config: Config) -> list[trio.SocketListener]:
    """Bind ``[admin] listen`` (none without the table); a bind error is a config error."""
    if config.admin is None:
        return []
    host, port = config.admin.listen_address
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise ConfigError("admin.listen", f"cannot listen: {exc.strerror or exc}") from None
