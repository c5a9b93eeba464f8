"""The seam: one connection from accept to close, HTTP until a WebSocket session.

This is the one module that knows both the HTTP side (:mod:`gateway.http.http11`) and the
WebSocket connection (Node ``ws``'s ``handleUpgrade(req, socket, head)``).
:func:`serve_connection` serves HTTP until the front door says ``Upgrade``; then, in order:
the client's handshake rate (``[limits]``), capacity, authentication and the plugin's veto
(:func:`prepare`); a place among the mount's ``max_connections`` (:meth:`Mount.reserve`) held
until the connection is registered; the 101, written by us in one write (h11 parsed the
request, and is done with once it has: its ``trailing_data``, bytes the client sent right
behind its handshake, go to the connection so no early frame is lost); the session
(:func:`open_session`); and the handler under the handler contract (:func:`handler_ending`,
:mod:`gateway.api`).  Every step runs within the mount's ``handshake_timeout`` from the first
byte of the request.  A refusal is answered by the HTTP side and ends the connection.

The session is served from :func:`serve_connection`'s own frame once the handshake's objects
are let go, so an idle connection keeps one coroutine frame of this module and nothing of
h11, the request or the handshake.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import h11
import trio
from trio_websocket import ConnectionClosed, Endpoint

from gateway import access, auth
from gateway.api import Accept, Address, Handler, Session, UpgradeRequest
from gateway.app import App, MountRuntime
from gateway.client_limits import Slot
from gateway.config.schema import WebSocketConfig
from gateway.core import handshake
from gateway.core import headers as hdr
from gateway.core.decisions import Reject, Upgrade
from gateway.errors import CloseSession
from gateway.errors import Refused as Refused  # the one Refused
from gateway.http.http11 import HTTPConnection
from gateway.log import RateLimit, safe
from gateway.mount import Mount, Reservation
from gateway.wire import response_head
from gateway.ws import deflate
from gateway.ws.connection import Limits, WebSocketConnection
from gateway.ws.deflate import DeflateParams

log = logging.getLogger("gateway.upgrade")
_sessions_log = logging.getLogger("gateway.session")  # session.log's logger

INTERNAL_ERROR = 1011
# A plugin's check() that fails answers 500 (never a dropped connection) and is logged,
# rate-limited: a client can trigger it at will.
CHECK_FAILED = Reject(500, "internal error", close=True)
_check_failures = RateLimit()
SHUTTING_DOWN = Reject(503, "server shutting down", (("Retry-After", "5"),), close=True)
AT_CAPACITY = Reject(503, "endpoint at capacity", (("Retry-After", "1"),), close=True)


async def serve_connection(
    app: App,
    stream: trio.abc.Stream,
    *,
    remote: Endpoint | None,
    secure: bool = False,
    slot: Slot | None = None,
    crashes: RateLimit | None = None,
) -> None:
    """One connection from accept to close: HTTP until it upgrades, then the WebSocket session.

    ``slot`` is the server's account of the connection (:mod:`gateway.server`): released, and
    the connection counted closed, when it ends.  With ``crashes``, a bug in the gateway's own
    code costs this connection only: it is logged (rate-limited) instead of raised.  A peer
    that went away mid-write is nothing to report.  The stream is closed on every path.

    The session and its handler run in this frame, under the handler contract
    (:mod:`gateway.api`): an idle WebSocket keeps this one coroutine frame of the gateway's
    (the server spawns this function itself; the engine's part is a context,
    :meth:`WebSocketConnection.serving`, not a coroutine), and none of h11's state, the
    request or the handshake (each ``del`` below lets one go)."""
    try:
        http = HTTPConnection(app, stream, remote=remote, secure=secure, slot=slot)
        del remote  # the HTTP side's; a WebSocket reads its endpoints from its stream
        wanted = await http.serve()  # closes the stream unless the client asks to upgrade
        if wanted is None:
            return
        opened = await _handshake(app, http, *wanted)  # closes the stream unless it opened
        del http, wanted
        if opened is None:
            return
        ws, session, handler = opened
        del opened
        started = trio.current_time()
        try:
            async with ws.serving():
                try:
                    await handler(ws, session)
                except Exception as exc:
                    code, reason = handler_ending(exc, session)
                else:
                    code, reason = 1000, ""
                await ws.aclose(code, reason)
        finally:
            session.mount.unregister(ws)  # registered by _handshake, through its reservation
        log_closed(ws, session, started)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the peer went away mid-write; nothing to report
    except Exception:
        # Whatever step failed, the socket is not left open (closing twice is harmless).
        await trio.aclose_forcefully(stream)
        if crashes is None:
            raise
        dropped = crashes.allow()
        if dropped is not None:
            more = f" ({dropped} more not logged)" if dropped else ""
            log.exception("connection handler crashed%s", more)
    finally:
        if slot is not None:
            app.limits.release(slot)
            app.connection_closed()


async def _handshake(
    app: App, http: HTTPConnection, request: h11.Request, decision: Upgrade
) -> tuple[WebSocketConnection, Session, Handler] | None:
    """From the front door's ``Upgrade`` to a registered connection, or ``None`` when the
    handshake was refused (answered) or its deadline passed (the stream is then closed)."""
    runtime = app.mounts[decision.mount.name]  # this generation's, to the end
    mount = runtime.mount
    # From the first byte of this request, not the accept (a keep-alive connection may be
    # older than handshake_timeout when its upgrade comes).
    deadline = http.request_started_at + mount.settings.handshake_timeout
    opened = None
    try:
        with trio.move_on_at(deadline):
            try:
                # [limits]: the client's handshake rate (and, through a proxy, its connections)
                limited, forwarded = app.limits.check_upgrade(
                    http.slot, http.remote, request.headers
                )
                if limited is not None:
                    mount.handshakes[limited.status] += 1
                    await http.refuse(limited)
                    return None
                remote = Address(forwarded) if forwarded is not None else _address(http.remote)
                admission = await prepare(app, decision, request, remote)
                place = _reserve(mount)  # after the awaits: concurrent handshakes counted
            except Refused as refused:
                mount.handshakes[refused.reject.status] += 1
                await http.refuse(refused.reject, request, mount.name)
                return None
            with place:
                # The write below skips trio when the kernel takes it whole: the deadline is
                # checked here, or a head that came in late would still be upgraded.
                await trio.lowlevel.checkpoint_if_cancelled()
                await http.wire.send(admission.response)
                mount.handshakes[101] += 1
                opened = open_session(
                    app,
                    runtime,
                    http.stream,
                    admission,
                    target=request.target.decode("ascii", "replace"),
                    header_block=hdr.pack(request.headers),
                    trailing=http.trailing_data(),
                )
                place.register(opened[0], user=auth.principal_user(admission.request.principal))
                return opened
        mount.handshakes[408] += 1  # the deadline passed: nothing was answered
        access.refusals.log(
            "deadline",
            logging.INFO,
            "handshake deadline passed",
            remote=http.remote_text,
            mount=mount.name,
        )
        return None
    finally:
        if opened is None:
            with trio.CancelScope(shield=True):
                await http.stream.aclose()


@dataclass(frozen=True)
class Admission:
    """An accepted handshake: the request as the plugin saw it and the 101 to send (the
    whole head, built by us: h11 is not needed to answer a request it parsed)."""

    request: UpgradeRequest
    response: bytes
    subprotocol: str | None
    compression: DeflateParams | None


async def prepare(
    app: App, decision: Upgrade, request: h11.Request, remote: Address | None
) -> Admission:
    """Run the admission checks after the pure front door: shutdown, capacity, auth, the
    plugin's veto (awaited when it is a coroutine).

    ``remote`` is the client's :class:`Address` (the forwarded client's behind a trusted
    proxy).  Returns the :class:`Admission`; raises :class:`Refused` with the answer otherwise.
    (Capacity is checked again, and a place held, once the awaits are over: the caller's
    :meth:`Mount.reserve`.)
    """
    runtime = app.mounts[decision.mount.name]
    mount = runtime.mount
    if app.draining:
        raise Refused(SHUTTING_DOWN)
    if mount.full:
        raise Refused(AT_CAPACITY)
    info = decision.handshake
    upgrade_request = UpgradeRequest(
        id=_session_id(),  # the session's, if accepted
        mount=mount,
        path=decision.path,
        params=decision.params,
        query=decision.query,
        headers=tuple([(hdr.text(n), hdr.text(v)) for n, v in hdr.pairs(request.headers)]),
        origin=info.origin,
        remote=remote,
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
    try:
        response_headers.extend(hdr.encode(extra))
        response = response_head(101, response_headers)
    except (UnicodeEncodeError, ValueError) as exc:  # the plugin's headers cannot go out
        _check_failed(upgrade_request, f"returned an unsendable header: {exc}")
        raise Refused(CHECK_FAILED) from None
    return Admission(upgrade_request, response, subprotocol, compression)


_ids: list[str] = []


def _session_id() -> str:
    """12 random hex digits (as ``secrets.token_hex(6)``), drawn from the OS 256 at a time:
    one ``getrandom`` call per handshake was ~1% of its CPU."""
    if not _ids:
        digits = secrets.token_hex(6 * 256)
        _ids.extend(digits[i : i + 12] for i in range(0, len(digits), 12))
    return _ids.pop()


def _reserve(mount: Mount) -> Reservation:
    """A place among the mount's ``max_connections`` for this handshake; 503 when full."""
    place = mount.reserve()
    if place is None:
        raise Refused(AT_CAPACITY)
    return place


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


def _address(remote: Endpoint | None) -> Address | None:
    """The peer's endpoint as the session's :class:`Address` (``None``: unknown)."""
    if remote is None:
        return None
    return Address(str(remote.address), remote.port)


def remote_text(remote: Address | None) -> str:
    """The client's address for a log line (``"-"``: unknown)."""
    return "-" if remote is None else str(remote)


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


def open_session(
    app: App,
    runtime: MountRuntime,
    stream: trio.abc.Stream,
    admission: Admission,
    *,
    target: str,
    header_block: bytes,
    trailing: bytes,
) -> tuple[WebSocketConnection, Session, Handler]:
    """Set up an accepted WebSocket, once its 101 is out: its connection (given ``trailing``,
    the bytes the client sent behind its handshake), its :class:`Session` (sharing the
    connection's ``header_block``, :func:`gateway.core.headers.pack`) and the plugin's
    handler to run with them (see :mod:`gateway.api`).

    The caller registers the connection with the mount, serves it, unregisters it in a
    ``finally``, then calls :func:`log_closed`.  Nothing returned refers to the admission or
    the request: once the caller lets them go, they are freed for the connection's life.
    """
    request = admission.request
    mount = runtime.mount
    ws = WebSocketConnection(
        stream,
        path=target,
        subprotocol=admission.subprotocol,
        handshake_headers=header_block,  # one block, shared with the session
        limits=limits_for(mount.settings),
        trailing_data=trailing,
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
        header_block=header_block,
    )
    # DEBUG: the session's INFO line is the closing one, which says all this and more (one
    # line per session, as an access log has one per request: each costs ~5% of a handshake).
    if _sessions_log.isEnabledFor(logging.DEBUG):  # (session.log makes an adapter)
        user = auth.principal_user(request.principal)
        session.log.debug(
            "open %s",
            safe(session.path),
            extra={
                "remote": remote_text(session.remote),
                "user": None if user is None else safe(user),
            },
        )
    if app.draining:  # shutdown began during the handshake
        ws.close_nowait(1001, "server shutting down")
    return ws, session, runtime.plugin.handler


# Per-session counters (the engine's), written on the closed line.
_COUNTERS = ("messages_in", "messages_out", "bytes_in", "bytes_out")


def log_closed(ws: WebSocketConnection, session: Session, opened: float | None = None) -> None:
    """The session's last log line (a new adapter: none is kept alive for the session's
    life): the close code and reason, how long it lasted (``opened``: trio time at the 101)
    and what went through it."""
    closed = ws.closed
    user = auth.principal_user(session.principal)
    fields: dict[str, object] = {
        "mount": session.mount.name,  # what session.log adds, without an adapter per line
        "session": session.id,
        "path": safe(session.path),
        "remote": remote_text(session.remote),
        "user": None if user is None else safe(user),
        "code": closed.code if closed else None,
        "reason": safe(closed.reason or "") if closed else None,
    }
    if opened is not None:
        fields["duration_ms"] = round((trio.current_time() - opened) * 1000, 1)
    for name in _COUNTERS:
        fields[name] = getattr(ws, name)
    _sessions_log.info("closed", extra=fields)


def handler_ending(exc: Exception, session: Session) -> tuple[int, str]:
    """The close code and reason a handler's exception maps to (the handler contract,
    :mod:`gateway.api`): the peer (or the gateway) closed first: 1000; ``CloseSession``: its
    code; anything else is a plugin bug: 1011, logged with the session id."""
    if isinstance(exc, ConnectionClosed):
        return 1000, ""
    if isinstance(exc, CloseSession):
        return exc.code, exc.reason
    return _from_exception(exc, session)


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
