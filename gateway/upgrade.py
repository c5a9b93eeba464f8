"""The seam: an h11 request that passed the front door becomes a WebSocket session.

This is the one module that knows both h11 and the WebSocket connection (Node ``ws``'s
``handleUpgrade(req, socket, head)``): it runs authentication and the plugin's veto, sends the
101 through h11 (so h11 stays the parser of record and never parses the request twice), hands
h11's ``trailing_data`` (bytes the client sent right behind its handshake) to the connection so
no early frame is lost, sets up the session (:func:`open_session`) and runs the handler under
the handler contract (:func:`call_handler`, :mod:`gateway.api`).  The session itself is served
by :func:`gateway.http.http11.serve_connection`, in the frame that served its HTTP, so an idle
connection keeps no extra coroutine frame for this module.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11
import trio
from trio_websocket import ConnectionClosed

from gateway import auth
from gateway.api import Accept, Address, Handler, Session, UpgradeRequest
from gateway.app import App, MountRuntime
from gateway.config.schema import WebSocketConfig
from gateway.core import handshake
from gateway.core import headers as hdr
from gateway.core.decisions import REASONS, Reject, Upgrade
from gateway.errors import CloseSession
from gateway.errors import Refused as Refused  # the one Refused; http11 catches it here
from gateway.log import RateLimit, safe
from gateway.ws import deflate
from gateway.ws.connection import Limits, WebSocketConnection
from gateway.ws.deflate import DeflateParams

log = logging.getLogger("gateway.upgrade")

INTERNAL_ERROR = 1011
# A plugin's check() that fails answers 500 (never a dropped connection) and is logged,
# rate-limited: a client can trigger it at will.
CHECK_FAILED = Reject(500, "internal error", close=True)
_check_failures = RateLimit()


@dataclass(frozen=True)
class Admission:
    """An accepted handshake: the request as the plugin saw it and what the 101 says."""

    request: UpgradeRequest
    headers: list[tuple[bytes, bytes]]
    subprotocol: str | None
    compression: DeflateParams | None


async def prepare(
    app: App, decision: Upgrade, request: h11.Request, remote: Address | str | None
) -> Admission:
    """Run the admission checks after the pure front door: capacity, auth, the plugin's veto
    (awaited when it is a coroutine).

    ``remote`` is the client's :class:`Address` (the forwarded client's behind a trusted
    proxy).  Returns the :class:`Admission`; raises :class:`Refused` with the answer otherwise.
    """
    runtime = app.mounts[decision.mount.name]
    mount = runtime.mount
    if app.draining:
        raise Refused(Reject(503, "server shutting down", (("Retry-After", "5"),), close=True))
    if mount.full:
        raise Refused(Reject(503, "endpoint at capacity", (("Retry-After", "1"),), close=True))
    info = decision.handshake
    upgrade_request = UpgradeRequest(
        id=secrets.token_hex(6),  # the session's, if accepted
        mount=mount,
        path=decision.path,
        params=decision.params,
        query=decision.query,
        headers=tuple((hdr.text(n), hdr.text(v)) for n, v in request.headers),
        origin=info.origin,
        remote=remote if not isinstance(remote, str) else _address(remote),
        subprotocols=info.subprotocols,
        subprotocol=handshake.choose_subprotocol(info.subprotocols, mount.settings.subprotocols),
    )
    principal = await auth.authenticate(mount.settings.auth, runtime.authenticator, upgrade_request)
    if isinstance(principal, Reject):
        raise Refused(principal)
    upgrade_request = _with_principal(upgrade_request, principal)
    extra: tuple[tuple[str, str], ...] = ()
    subprotocol = upgrade_request.subprotocol
    instance = runtime.plugin.instance
    if instance is not None:
        verdict = await _check(instance.check, upgrade_request)
        if isinstance(verdict, Reject):
            raise Refused(verdict)
        if isinstance(verdict, Accept):
            extra = verdict.headers
            if verdict.chooses_subprotocol:
                subprotocol = _chosen(verdict, upgrade_request)
    response_headers = [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", handshake.accept_key(info.key)),
    ]
    if subprotocol is not None:
        response_headers.append((b"sec-websocket-protocol", subprotocol.encode("ascii")))
    compression = None
    if mount.settings.compression == "deflate":
        compression = deflate.negotiate(info.extensions)
        if compression is not None:
            response_headers.append((b"sec-websocket-extensions", compression.header().encode()))
    response_headers.extend(hdr.encode(extra))
    if mount.full:  # filled up while we awaited auth: check again, then hold a place
        raise Refused(Reject(503, "endpoint at capacity", (("Retry-After", "1"),), close=True))
    mount.reserved += 1  # released by open_session's registration, or by the caller on failure
    return Admission(upgrade_request, response_headers, subprotocol, compression)


def _with_principal(request: UpgradeRequest, principal: object) -> UpgradeRequest:
    return dataclasses.replace(request, principal=principal)


async def _check(
    check: Callable[[UpgradeRequest], object], request: UpgradeRequest
) -> Reject | Accept | None:
    """The plugin's verdict: its check called, and awaited if it returned an awaitable.  A
    check that raises, or returns something else, is a plugin bug: 500, logged."""
    try:
        verdict = check(request)
        if inspect.isawaitable(verdict):
            verdict = await verdict
    except Exception as exc:
        _check_failed(request, f"raised {type(exc).__name__}: {exc}", exc)
        raise Refused(CHECK_FAILED) from None
    if verdict is None or isinstance(verdict, Reject | Accept):
        return verdict
    _check_failed(request, f"returned {type(verdict).__name__}, not Reject, Accept or None")
    raise Refused(CHECK_FAILED)


def _chosen(verdict: Accept, request: UpgradeRequest) -> str | None:
    """The subprotocol a check chose: one the client offered, or none (RFC 6455 §4.2.2)."""
    chosen = verdict.subprotocol
    if chosen is None or (isinstance(chosen, str) and chosen in request.subprotocols):
        return chosen
    _check_failed(request, f"chose subprotocol {chosen!r}, which the client did not offer")
    raise Refused(CHECK_FAILED)


def _check_failed(request: UpgradeRequest, what: str, exc: Exception | None = None) -> None:
    dropped = _check_failures.allow()
    if dropped is not None:
        more = f" ({dropped} more not logged)" if dropped else ""
        request.log.error("check() %s; answered 500%s", safe(what), more, exc_info=exc)


def _address(text: str) -> Address | None:
    """The HTTP side's text form of the client's address (``"1.2.3.4:5678"``, ``"[::1]:5678"``,
    a forwarded client's bare address, ``"-"`` for none) as an :class:`Address`."""
    try:
        return Address(str(ipaddress.ip_address(text)))  # bare: a forwarded client
    except ValueError:
        pass  # not a bare address: "host:port" below
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        return None
    return Address(host.removeprefix("[").removesuffix("]"), int(port))


def remote_text(remote: Address | None) -> str:
    """The client's address for a log line (``"-"``: unknown)."""
    return "-" if remote is None else str(remote)


async def switch(
    stream: trio.abc.Stream,
    conn: h11.Connection,
    headers: list[tuple[bytes, bytes]],
) -> bytes:
    """Send the 101 through h11 and return the bytes the client sent behind its handshake."""
    response = h11.InformationalResponse(status_code=101, headers=headers, reason=REASONS[101])
    await stream.send_all(conn.send(response) or b"")
    trailing, _closed = conn.trailing_data
    return bytes(trailing)


@functools.lru_cache(maxsize=64)
def limits_for(settings: WebSocketConfig) -> Limits:
    """The engine's limits for a mount (burst: five seconds' worth of the frame rate).

    Cached (``WebSocketConfig`` is a frozen dataclass of hashable values): every connection of
    a mount shares one frozen :class:`Limits` instead of keeping its own copy."""
    return Limits(
        max_message_size=settings.max_message_size,
        max_fragments=settings.max_fragments,
        max_frame_rate=settings.max_frame_rate,
        frame_burst=settings.max_frame_rate * 5,
        inbound_queue=settings.inbound_queue,
        inbound_queue_bytes=settings.inbound_queue_bytes,
        outbound_queue_bytes=settings.outbound_queue_bytes,
        max_inflate_rate=settings.max_inflate_rate,
        close_timeout=settings.close_timeout,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
    )


@dataclass(frozen=True)
class Handover:
    """Everything a WebSocket session needs once the 101 is out (and nothing of h11)."""

    runtime: MountRuntime
    stream: trio.abc.Stream
    admission: Admission
    target: str
    header_block: bytes  # the request's headers, packed (gateway.core.headers.pack)
    trailing: bytes


def open_session(
    app: App, handover: Handover
) -> tuple[WebSocketConnection, Session, Callable[[], Awaitable[None]]]:
    """Set up an accepted WebSocket: its connection, its :class:`Session`, and the handler task
    for :meth:`WebSocketConnection.serve` (see :mod:`gateway.api`).

    The connection is counted among the mount's clients from here on (it takes over the place
    :func:`prepare` reserved): the caller serves it, calls ``session.mount.unregister(ws)`` in
    a ``finally``, then :func:`log_closed`.  Nothing returned refers to the handover: once the
    caller lets it go, the handshake's objects are freed for the connection's life.
    """
    admission = handover.admission
    request = admission.request
    runtime = handover.runtime
    mount = runtime.mount
    ws = WebSocketConnection(
        handover.stream,
        path=handover.target,
        subprotocol=admission.subprotocol,
        handshake_headers=handover.header_block,  # one block, shared with the session
        limits=limits_for(mount.settings),
        trailing_data=handover.trailing,
        compression=admission.compression,
    )
    session = Session(
        id=request.id,
        mount=mount,
        path=request.path,
        params=request.params,
        query=request.query,
        principal=request.principal,
        origin=request.origin,
        remote=request.remote,
        subprotocol=admission.subprotocol,
        subprotocols=request.subprotocols,
        header_block=handover.header_block,
    )
    handler_task = functools.partial(call_handler, runtime.plugin.handler, ws, session)
    user = auth.principal_user(request.principal)
    session.log.info(
        "open %s",
        safe(session.path),
        extra={"remote": remote_text(session.remote), "user": None if user is None else safe(user)},
    )
    if app.draining:  # shutdown began during the handshake
        ws.close_nowait(1001, "server shutting down")
    # last: from here on the caller's finally unregisters
    mount.register(ws, reserved=True, user=user)
    return ws, session, handler_task


# Per-session counters (the engine's), written on the closed line.
_COUNTERS = ("messages_in", "messages_out", "bytes_in", "bytes_out")


def log_closed(ws: WebSocketConnection, session: Session, opened: float | None = None) -> None:
    """The session's last log line (a new adapter: none is kept alive for the session's
    life): the close code and reason, how long it lasted (``opened``: trio time at the 101)
    and what went through it."""
    closed = ws.closed
    user = auth.principal_user(session.principal)
    fields: dict[str, object] = {
        "remote": remote_text(session.remote),
        "user": None if user is None else safe(user),
        "code": closed.code if closed else None,
        "reason": safe(closed.reason or "") if closed else None,
    }
    if opened is not None:
        fields["duration_ms"] = round((trio.current_time() - opened) * 1000, 1)
    for name in _COUNTERS:
        fields[name] = getattr(ws, name)
    session.log.info("closed", extra=fields)


async def call_handler(handler: Handler, ws: WebSocketConnection, session: Session) -> None:
    """Run the handler, then close the WebSocket with the code its ending maps to (the
    handler contract).  This is the handler task :meth:`WebSocketConnection.serve` runs: one
    coroutine, so an idle session keeps one frame for it."""
    try:
        await handler(ws, session)
    except ConnectionClosed:
        code, reason = 1000, ""  # the peer (or the gateway) closed first: a normal end
    except CloseSession as exc:
        code, reason = exc.code, exc.reason
    except Exception as exc:
        code, reason = _from_exception(exc, session)
    else:
        code, reason = 1000, ""
    await ws.aclose(code, reason)


def _from_exception(exc: Exception, session: Session) -> tuple[int, str]:
    # A handler that used a nursery raises groups; look inside for the two expected endings.
    if isinstance(exc, ExceptionGroup):
        expected, rest = exc.split((ConnectionClosed, CloseSession))
        if rest is None:
            closes = expected.subgroup(CloseSession) if expected is not None else None
            if closes is None:
                return 1000, ""
            first = _first_leaf(closes)
            if isinstance(first, CloseSession):
                return first.code, first.reason
    session.log.error("handler failed; closing with 1011", exc_info=exc)
    return INTERNAL_ERROR, "internal error"


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
