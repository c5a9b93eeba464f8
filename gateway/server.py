"""The listening side: bind, accept, cap connections, and shut down gracefully.

Resource ownership follows trio's rules: :func:`serve` owns the listeners and one nursery of
connection tasks; nothing outlives it.  Shutdown (``shutdown`` event, e.g. SIGTERM) runs in
this order: ``/readyz`` turns 503 and new handshakes get 503; after ``drain_delay`` (default 0)
we stop accepting and close the listeners; keep-alive connections close after their current
response; every open WebSocket is sent 1001 (after what was already queued for it);
connections get ``shutdown_timeout`` seconds to finish; whatever is left is cancelled; plugin
lifespans unwind last.
"""

from __future__ import annotations

import errno
import functools
import logging
import ssl
from collections.abc import Callable, Sequence

import trio
from trio_websocket import Endpoint

from gateway import admin, reloader
from gateway.app import App
from gateway.client_limits import CONNECTIONS_RESPONSE
from gateway.config.schema import Config
from gateway.core.address import ListenAddress
from gateway.log import RateLimit
from gateway.upgrade import serve_connection

log = logging.getLogger("gateway.server")

# accept() failures that mean "out of a resource for now", not "this listener is broken":
# keep serving the connections we have and retry shortly (trio's serve_listeners does too).
_ACCEPT_CAPACITY_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_BACKOFF = 0.1
# "connection handler crashed" is a gateway bug, but a client may be able to hit it at will:
# the first few per minute keep their traceback, the rest are counted (issue 9).
CRASH_LOG_BURST = 5
CRASH_LOG_INTERVAL = 60.0
# Refused connections whose close lingers at once (see _refuse), and what each may read.
MAX_LINGERING = 64
LINGER_BYTES = 65536
_lingering = 0
OVERLOAD_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: text/plain\r\n"
    b"content-length: 20\r\nconnection: close\r\n\r\nserver at capacity.\n"
)


def ssl_context(cert: str, key: str) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2+, HTTP/1.1 via ALPN) for ``[server.tls]``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


async def open_listeners(addresses: Sequence[ListenAddress]) -> list[trio.SocketListener]:
    """Bind every ``host:port`` (port 0 picks a free one)."""
    listeners: list[trio.SocketListener] = []
    for host, port in addresses:
        listeners.extend(await trio.open_tcp_listeners(port, host=host))
    return listeners


def announce(config: Config, urls: Sequence[str]) -> None:
    """The lines a person reads first, once: what is served and where to point a browser."""
    if not urls:
        return
    base = urls[0]
    ws_base = "ws" + base.removeprefix("http")
    mounts = ", ".join(f"{m.name} {ws_base}{m.path}" for m in config.plugins) or "none"
    log.info("serving %d mounts: %s", len(config.plugins), mounts)
    page = " (static files)" if config.http.static_root is not None else ""
    log.info("open %s/ in a browser%s", base, page)


def bound_urls(listeners: Sequence[trio.SocketListener], secure: bool) -> list[str]:
    """``http://127.0.0.1:41234`` for every listener, with the port the OS chose."""
    urls = []
    for listener in listeners:
        host, port = listener.socket.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        urls.append(f"{'https' if secure else 'http'}://{host}:{port}")
    return urls


async def serve(
    app: App,
    listeners: list[trio.SocketListener],
    shutdown: trio.Event,
    *,
    reloads: trio.MemoryReceiveChannel[Callable[[], Config]] | None = None,
    admin_listeners: Sequence[trio.SocketListener] = (),
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown`` is set, then drain (see the module docstring).  Each loader
    received on ``reloads`` (SIGHUP) reloads the config (:mod:`gateway.reloader`)."""
    tls = app.config.server.tls
    context = ssl_context(tls.cert, tls.key) if tls else None
    urls = bound_urls(listeners, context is not None)
    crashes = RateLimit(CRASH_LOG_BURST, CRASH_LOG_INTERVAL)
    async with app.lifespans(), trio.open_nursery() as connections:
        async with trio.open_nursery() as accepting:
            for listener in listeners:
                accepting.start_soon(_accept_loop, app, listener, connections, context, crashes)
            if reloads is not None:
                accepting.start_soon(_reload_loop, app, reloads, connections)
            for url in urls:
                log.info("listening on %s", url)
            if admin_listeners:  # [admin]: served to the very end, the drain included
                await connections.start(admin.serve_local, app, admin_listeners)
            task_status.started(urls)
            await shutdown.wait()
            # /readyz answers 503 from now on and new handshakes get 503; with a drain_delay
            # we keep accepting meanwhile, so a load balancer has time to notice.
            app.draining = True
            delay = app.config.server.drain_delay
            if delay > 0:
                log.info("draining: still accepting for %.1fs", delay)
                await trio.sleep(delay)
            accepting.cancel_scope.cancel()
        for listener in listeners:
            await listener.aclose()
        log.info("shutting down: %d connections open", app.connections)
        app.start_draining()
        with trio.move_on_after(app.config.server.shutdown_timeout):
            await app.idle.wait()
        if app.connections:
            log.warning("shutdown timeout: aborting %d connections", app.connections)
        connections.cancel_scope.cancel()
    log.info("stopped")


async def _reload_loop(
    app: App,
    reloads: trio.MemoryReceiveChannel[Callable[[], Config]],
    connections: trio.Nursery,
) -> None:
    """One reload at a time, in order; none once draining (the accept loops' scope ends this
    task when the drain begins)."""
    async for load in reloads:
        await reloader.reload(app, load, connections)


async def _accept_loop(
    app: App,
    listener: trio.SocketListener,
    nursery: trio.Nursery,
    context: ssl.SSLContext | None,
    crashes: RateLimit,
) -> None:
    limit = app.config.server.max_connections
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno in _ACCEPT_CAPACITY_ERRORS:
                log.warning(
                    "accept failed (%s); retrying in %.1fs",
                    errno.errorcode[exc.errno],
                    ACCEPT_BACKOFF,
                )
                await trio.sleep(ACCEPT_BACKOFF)
                continue
            raise
        if app.connections >= limit:
            app.stats.refused["capacity"] += 1
            nursery.start_soon(_refuse, stream, context)
            continue
        remote = _remote(stream, context is not None)  # one getpeername, parsed once
        slot = app.limits.admit(remote)  # [limits]: this client's open connections
        if slot is None:
            app.stats.refused["client"] += 1
            nursery.start_soon(_refuse, stream, context, CONNECTIONS_RESPONSE)
            continue
        app.stats.accepted += 1
        app.connection_opened()
        served = _over_tls(stream, context)
        # The connection's one task runs the seam itself (no frame of ours above it for the
        # connection's whole life); it releases the slot and counts the connection closed.
        nursery.start_soon(
            functools.partial(
                serve_connection,
                app,
                served,
                remote=remote,
                secure=context is not None,
                slot=slot,
                crashes=crashes,
            ),
            name="connection",
        )


async def _refuse(
    stream: trio.SocketStream, context: ssl.SSLContext | None, response: bytes = OVERLOAD_RESPONSE
) -> None:
    """Over ``server.max_connections`` (or the client's ``limits.connections_per_client``): a
    fixed 503 with Retry-After (over TLS on a TLS port), then close; the whole exchange gets
    one second.

    The close lingers: the client has usually sent its request already, and closing with it
    unread makes the kernel send a RST, which can destroy the 503 before the client reads it.
    So we send FIN and read until the client closes too (at most ``LINGER_BYTES``, within the
    second), unless ``MAX_LINGERING`` refusals are lingering already: then we close at once,
    so that refusals cannot be made to hold file descriptors."""
    global _lingering
    served = _over_tls(stream, context)
    linger = _lingering < MAX_LINGERING
    _lingering += linger
    try:
        with trio.move_on_after(1):
            await served.send_all(response)
            if linger:
                if isinstance(served, trio.SocketStream):
                    await served.send_eof()
                drained = 0
                while drained < LINGER_BYTES and (data := await served.receive_some(16384)):
                    drained += len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client left: nothing to refuse
    finally:
        _lingering -= linger
        await trio.aclose_forcefully(served)


def _over_tls(stream: trio.SocketStream, context: ssl.SSLContext | None) -> trio.abc.Stream:
    """The stream to serve: TLS over ``stream`` on a TLS listener, else ``stream`` itself."""
    if context is None:
        return stream
    return trio.SSLStream(stream, context, server_side=True, https_compatible=True)


def _remote(stream: trio.SocketStream, secure: bool) -> Endpoint | None:
    try:
        remote = stream.socket.getpeername()
        return Endpoint(remote[0], remote[1], secure)
    except (OSError, ValueError, IndexError):
        return None
