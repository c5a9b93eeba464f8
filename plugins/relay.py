"""``plugins.relay:Relay``: relay a WebSocket to another WebSocket server (e.g. the legacy site's).

Each client session opens one upstream connection (trio-websocket's client) to ``url`` and
relays messages both ways, text as text and binary as binary, each side backpressuring the
other (a message is read from one side only once the previous one was written to the other).

Closing is propagated both ways: the upstream closing with 4001 closes the client with 4001
(same reason); the client closing with 4002 closes the upstream with 4002.  Codes that cannot
be sent on (1005 "no status": 1000; 1006 "connection lost": 1011 toward the client, 1001
toward the upstream) are mapped.

**Upstream faults are never blamed on the client.**  An unreachable upstream, a refused or
malformed upstream handshake (a bad ``Sec-WebSocket-Accept``, a 101 without ``Upgrade``, bytes
that are not HTTP), no upstream handshake within ``connect_timeout``, a frame the upstream got
wrong (a reserved opcode, invalid UTF-8, a masked frame), an upstream message over the mount's
``max_message_size`` and an upstream Close with 1002 (a protocol error on the gateway's own
leg) all close the client with **1011** and the reason ``"bad gateway"``, never with the
1002/1007/1009 that would tell the client *it* broke something.  Each is logged as one WARNING
line naming the upstream URL, at most one line per kind of fault per upstream every
``WARN_INTERVAL`` seconds (the next one says how many were left out).  (RFC 6455's registry has
1014 "Bad Gateway", but wsproto, and so trio-websocket and the gateway's own test client,
reject 1014 as an unknown reserved code: 1011 is understood by every client.)

**Subprotocols are negotiated end to end, before the client's 101.**  When the client offers
subprotocols, the relay's :meth:`Relay.check` (a coroutine) connects upstream first and offers
it the client's list (only those in the mount's ``subprotocols``, in that order, when the mount
has that key); the client's 101 then carries exactly the upstream's choice (none if it chose
none), so both legs always agree.  The connection it opened is the one the session then uses:
it is kept for the handler under the handshake's id (``request.id`` is ``session.id``), its
reader task in the plugin's lifespan nursery, and closed (1001) if the handshake never becomes
a session (the client left, the mount filled up) within ``handshake_timeout``.  An upstream
that fails at that point is answered **502** (the handshake is refused: no 101 yet, so no
WebSocket close code to send), with the same rate-limited warning.  A client that offers no
subprotocol is connected upstream by the handler, after its 101, as before.

Options: ``url`` (required, ``ws://`` or ``wss://``), ``forward_origin`` (false: send the
client's ``Origin`` upstream), ``forward_cookies`` (false: send the client's ``Cookie``
headers upstream), ``connect_timeout`` (5 s).  The upstream always gets ``X-Forwarded-For``
with the client's address.  Upstream messages are limited by the mount's
``max_message_size`` (a larger one closes the upstream with 1009 and the client with 1011
"bad gateway").

Memory: the upstream leg holds at most one message waiting (trio-websocket's queue of one),
one being read and one being sent to the client, each at most ``max_message_size``; the
client leg is the engine's (README, "Limits and security": per-connection memory).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11
import trio
import trio_websocket
import wsproto.utilities
from wsproto.connection import ConnectionState

from gateway.api import (
    Accept,
    CloseReason,
    CloseSession,
    ConfigError,
    ConnectionClosed,
    Mount,
    Plugin,
    Reject,
    Session,
    UpgradeRequest,
    WebSocketConnection,
    is_sendable_close_code,
    safe,
)

BAD_GATEWAY = 1011  # see the module docstring for why not 1014
# Before the 101 (check()), an upstream fault is an HTTP answer (RFC 9110 §15.6.3).
BAD_GATEWAY_RESPONSE = Reject(502, "bad gateway", close=True)
CLOSE_TIMEOUT = 5.0  # seconds for the upstream's closing handshake
WARN_INTERVAL = 60.0  # seconds: at most one warning per kind of upstream fault in this long
# What trio-websocket's reader task raises when the upstream's handshake response is malformed
# (wsproto's errors; h11's when trio-websocket then tries to answer it as a server would).
_HANDSHAKE_FAULTS = (
    trio_websocket.HandshakeError,
    wsproto.utilities.ProtocolError,
    h11.ProtocolError,
)


@dataclass(frozen=True)
class RelayOptions:
    url: str
    forward_origin: bool = False
    forward_cookies: bool = False
    connect_timeout: float = field(default=5.0, metadata={"min": 0})


@dataclass(frozen=True)
class Ending:
    """Which side ended the relay, and how (``code``/``reason`` as that side closed)."""

    side: str  # "client" or "upstream"
    code: int
    reason: str
    fault: str | None = None  # the upstream's fault, if it ended that way (then: bad gateway)


@dataclass(frozen=True)
class Fault:
    """The upstream failed: the client gets 1011 "bad gateway", the log one warning."""

    kind: str  # one rate-limited warning per kind
    detail: str  # upstream-controlled text is escaped (gateway.log.safe) when logged


@dataclass
class Claim:
    """An upstream connection check() opened, waiting for its session's handler."""

    upstream: trio_websocket.WebSocketConnection
    stream: trio.abc.Stream
    taken: trio.Event = field(default_factory=trio.Event)


class Throttle:
    """At most one log line per key every ``interval`` seconds; the next line says how many
    were left out (every line an upstream or client can trigger is rate-limited)."""

    def __init__(self, interval: float = WARN_INTERVAL) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def allow(self, key: str, now: float) -> int | None:
        """``None``: leave this line out; else log it, noting that many left out before."""
        if now < self._next.get(key, -1.0):
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return None
        self._next[key] = now + self.interval
        return self._skipped.pop(key, 0)


class Relay(Plugin[RelayOptions]):
    """Relay each session to ``options.url``; see the module docstring."""

    options_type = RelayOptions

    def __init__(self, options: RelayOptions, mount: Mount) -> None:
        super().__init__(options, mount)
        try:
            parts = urlsplit(options.url)
            parts.port  # noqa: B018  (raises ValueError on a bad port)
        except ValueError as exc:
            raise ConfigError(f"plugins.{mount.name}.options.url", str(exc)) from None
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ConfigError(
                f"plugins.{mount.name}.options.url",
                f"must be an absolute ws:// or wss:// URL, got {options.url!r}",
            )
        self._secure = parts.scheme == "wss"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._secure else 80)
        default_port = parts.port is None or parts.port == (443 if self._secure else 80)
        self._host_header = parts.netloc if not default_port else parts.hostname
        self._resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._throttle = Throttle()
        self._nursery: trio.Nursery | None = None  # the lifespan's: negotiated upstreams
        self._claims: dict[str, Claim] = {}  # by handshake id (= session id)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """A nursery for the reader tasks of the upstreams check() negotiates with."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                yield
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()  # unclaimed upstreams: closed by cancellation

    def warn(self, log: logging.LoggerAdapter[logging.Logger], fault: Fault) -> None:
        """One WARNING line naming the upstream, rate-limited per kind of fault."""
        skipped = self._throttle.allow(fault.kind, trio.current_time())
        if skipped is None:
            return
        more = f" ({skipped} more since the last report)" if skipped else ""
        log.warning("upstream %s %s%s", safe(self.options.url), safe(fault.detail), more)

    def upstream_headers(self, client: Session | UpgradeRequest) -> list[tuple[bytes, bytes]]:
        """The extra headers of the upstream handshake for a session (or its handshake)."""
        headers = []
        if client.remote is not None:
            headers.append((b"X-Forwarded-For", client.remote.host.encode("ascii")))
        if self.options.forward_origin and client.origin is not None:
            headers.append((b"Origin", client.origin.encode("latin-1")))
        if self.options.forward_cookies:
            headers += [
                (b"Cookie", v.encode("latin-1")) for n, v in client.headers if n == "cookie"
            ]
        return headers

    def offer(self, request: UpgradeRequest) -> tuple[str, ...]:
        """The subprotocols to offer upstream: the client's, filtered by (and in the order of)
        the mount's ``subprotocols`` when it has that key."""
        allowed = self.mount.settings.subprotocols
        if not allowed:
            return request.subprotocols
        return tuple(p for p in allowed if p in request.subprotocols)

    async def check(self, request: UpgradeRequest) -> Accept | Reject | None:
        """Negotiate the subprotocol with the upstream before the client's 101 (module doc)."""
        offer = self.offer(request)
        if not offer or self._nursery is None:
            return None  # nothing to negotiate: the handler connects after the 101
        try:
            with trio.fail_after(self.options.connect_timeout):
                claim: Claim = await self._nursery.start(
                    self._negotiated, offer, self.upstream_headers(request), request.id
                )
        except (OSError, trio.TooSlowError) as exc:
            self.warn(request.log, Fault("unreachable", f"is unreachable or too slow: {exc!r}"))
            return BAD_GATEWAY_RESPONSE
        except ExceptionGroup as group:
            faults, rest = group.split(_HANDSHAKE_FAULTS)
            if rest is not None or faults is None:
                raise
            self.warn(request.log, _handshake_fault(_first(faults)))
            return BAD_GATEWAY_RESPONSE
        self._claims[request.id] = claim
        return Accept(subprotocol=claim.upstream.subprotocol)

    async def _negotiated(
        self,
        offer: Sequence[str],
        headers: list[tuple[bytes, bytes]],
        key: str,
        *,
        task_status: trio.TaskStatus[Claim],
    ) -> None:
        """Open the upstream for a handshake, hand it over, then host its reader task (in the
        lifespan nursery) until the session closes it, or close it if nobody claims it."""
        stream = await self._open_stream()
        claim: Claim | None = None
        try:
            async with trio.open_nursery() as nursery:
                upstream = await self._wrap(nursery, stream, offer, headers)
                claim = Claim(upstream, stream)
                task_status.started(claim)
                with trio.move_on_after(self.mount.settings.handshake_timeout):
                    await claim.taken.wait()
                if not claim.taken.is_set():  # the handshake never became a session
                    self._claims.pop(key, None)
                    await _close_upstream(upstream, Ending("client", 1001, ""))
                    await trio.aclose_forcefully(stream)
                # else: the session's handler closes the stream, which ends the reader task
        except Exception:
            if claim is None:
                raise  # a failed handshake: check() answers it
            # After the hand-over the session sees the upstream's end as a ConnectionClosed.
        finally:
            if claim is None or not claim.taken.is_set():
                await trio.aclose_forcefully(stream)

    async def _wrap(
        self,
        nursery: trio.Nursery,
        stream: trio.abc.Stream,
        offer: Sequence[str] | None,
        headers: list[tuple[bytes, bytes]],
    ) -> trio_websocket.WebSocketConnection:
        return await trio_websocket.wrap_client_stream(
            nursery,
            stream,  # type: ignore[arg-type]  # any trio Stream works
            self._host_header,
            self._resource,
            subprotocols=list(offer) if offer else None,
            extra_headers=headers,
            max_message_size=self.mount.settings.max_message_size,
        )

    async def handle(self, ws: WebSocketConnection, session: Session) -> None:
        result: Ending | CloseSession | Fault
        claim = self._claims.pop(session.id, None)  # the upstream check() negotiated with
        if claim is not None:
            claim.taken.set()
        try:
            async with trio.open_nursery() as nursery:  # runs the upstream client's reader
                result = await self._session(nursery, ws, session, claim)
                nursery.cancel_scope.cancel()
        except ExceptionGroup as group:
            # trio-websocket raises a refused or malformed handshake in its reader task.
            faults, rest = group.split(_HANDSHAKE_FAULTS)
            if rest is not None or faults is None:
                raise
            result = _handshake_fault(_first(faults))
        if isinstance(result, Ending) and result.fault is not None:
            result = Fault("frame", result.fault)
        if isinstance(result, Fault):
            self.warn(session.log, result)
            raise CloseSession(BAD_GATEWAY, "bad gateway")
        if isinstance(result, CloseSession):
            raise result
        if result.side == "upstream":
            raise _toward_client(result)
        # The client closed: the gateway already answered its Close; nothing more to send.

    async def _session(
        self,
        nursery: trio.Nursery,
        ws: WebSocketConnection,
        session: Session,
        claim: Claim | None = None,
    ) -> Ending | CloseSession | Fault:
        stream: trio.abc.Stream | None = None
        try:
            if claim is not None:
                stream, upstream = claim.stream, claim.upstream
            else:
                with trio.fail_after(self.options.connect_timeout):
                    stream = await self._open_stream()
                    connected = await self._connect(nursery, stream, session)
                if isinstance(connected, CloseSession):
                    return connected
                upstream = connected
            ending = await _relay(ws, upstream)
            await _close_upstream(upstream, ending)
            return ending
        except (OSError, trio.TooSlowError) as exc:
            what = "did not complete its handshake in time" if stream else "is unreachable"
            return Fault("unreachable", f"{what}: {exc!r}")
        finally:
            # trio-websocket's client does not close its stream when the server closes
            # first: close it here, always.
            if stream is not None:
                await trio.aclose_forcefully(stream)

    async def _open_stream(self) -> trio.abc.Stream:
        if self._secure:
            context = ssl.create_default_context()
            return await trio.open_ssl_over_tcp_stream(
                self._host, self._port, ssl_context=context, https_compatible=True
            )
        return await trio.open_tcp_stream(self._host, self._port)

    async def _connect(
        self, nursery: trio.Nursery, stream: trio.abc.Stream, session: Session
    ) -> trio_websocket.WebSocketConnection | CloseSession:
        offer = (session.subprotocol,) if session.subprotocol is not None else None
        upstream = await self._wrap(nursery, stream, offer, self.upstream_headers(session))
        if upstream.subprotocol != session.subprotocol:
            self.warn(
                session.log,
                Fault(
                    "subprotocol",
                    f"chose subprotocol {upstream.subprotocol!r}, "
                    f"the client was given {session.subprotocol!r}",
                ),
            )
            await _close_upstream(upstream, Ending("client", 1000, ""))
            return CloseSession(BAD_GATEWAY, "upstream refused subprotocol")
        return upstream


async def _relay(ws: WebSocketConnection, upstream: trio_websocket.WebSocketConnection) -> Ending:
    """Pump messages both ways until one side closes; say which and how."""
    endings: list[Ending] = []

    async def pump(
        source: WebSocketConnection | trio_websocket.WebSocketConnection,
        sink: WebSocketConnection | trio_websocket.WebSocketConnection,
        names: tuple[str, str],
        cancel: trio.CancelScope,
    ) -> None:
        while True:
            try:
                message = await source.get_message()
            except ConnectionClosed as exc:
                ending = _ending(names[0], exc.reason)
                if source is upstream:
                    ending = _judge_upstream(upstream, ending)
                endings.append(ending)
                break
            try:
                await sink.send_message(message)
            except ConnectionClosed as exc:
                endings.append(_ending(names[1], exc.reason))
                break
        cancel.cancel()

    async with trio.open_nursery() as nursery:
        scope = nursery.cancel_scope
        nursery.start_soon(pump, ws, upstream, ("client", "upstream"), scope)
        nursery.start_soon(pump, upstream, ws, ("upstream", "client"), scope)
    return endings[0]


def _judge_upstream(upstream: trio_websocket.WebSocketConnection, ending: Ending) -> Ending:
    """``ending`` with its ``fault`` set if the upstream leg ended through the upstream's fault.

    trio-websocket reports a frame it could not parse exactly like a Close the upstream sent
    (wsproto turns its ``ParseFailed`` into a ``CloseConnection`` event with the parser's code,
    e.g. 1002 "Invalid opcode 0xf"), and an oversized message as a close of its own; only
    wsproto's state tells them apart: a Close frame received moves it out of OPEN, a parse
    failure leaves it OPEN, and trio-websocket's own 1009 Close moves it to LOCAL_CLOSING."""
    state = getattr(getattr(upstream, "_wsproto", None), "state", None)
    if state is ConnectionState.OPEN and ending.code != 1006:
        fault = f"sent an invalid frame ({ending.reason})"
        return Ending(ending.side, ending.code, ending.reason, fault)
    if state is ConnectionState.LOCAL_CLOSING and ending.code == 1009:
        fault = "sent a message over max_message_size"
        return Ending(ending.side, ending.code, ending.reason, fault)
    if ending.code == 1002:
        # A protocol error on the gateway's own leg: the client's frames never reach it.
        fault = f"closed with 1002 ({ending.reason})"
        return Ending(ending.side, ending.code, ending.reason, fault)
    return ending


def _handshake_fault(exc: BaseException) -> Fault:
    if isinstance(exc, trio_websocket.ConnectionRejected):
        return Fault("refused", f"refused the handshake with {exc.status_code}")
    if isinstance(exc, trio_websocket.HandshakeError):
        return Fault("refused", f"failed the handshake: {exc!r}")
    # trio-websocket answers wsproto's RemoteProtocolError by trying to send its hint (a
    # server's reject) from a client, so h11 raises; the upstream's fault is the context.
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, wsproto.utilities.RemoteProtocolError):
        cause = cause.__context__
    return Fault("handshake", f"sent a malformed handshake response: {cause or exc}")


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


def _ending(side: str, reason: CloseReason | None) -> Ending:
    if reason is None:
        return Ending(side, 1006, "")
    return Ending(side, reason.code, reason.reason or "")


def _toward_client(ending: Ending) -> CloseSession:
    """How the client is closed when the upstream closed with ``ending``."""
    if ending.code == 1005:
        return CloseSession(1000, "")
    if not is_sendable_close_code(ending.code):
        return CloseSession(BAD_GATEWAY, "upstream connection lost")
    return CloseSession(ending.code, _cut(ending.reason))


async def _close_upstream(upstream: trio_websocket.WebSocketConnection, ending: Ending) -> None:
    """Close the upstream with the client's code (mapped), waiting at most ``CLOSE_TIMEOUT``."""
    if upstream.closed is not None:
        return
    code, reason = ending.code, _cut(ending.reason)
    if code == 1005:
        code, reason = 1000, ""
    elif not is_sendable_close_code(code):
        code, reason = 1001, "client connection lost"
    # Not shielded: the closing handshake needs trio-websocket's reader task, which a
    # cancellation of the session stops too; the caller then closes TCP in any case.
    with trio.move_on_after(CLOSE_TIMEOUT):
        await upstream.aclose(code, reason)


def _cut(reason: str) -> str:
    """A close reason fits in 123 UTF-8 bytes (RFC 6455 §5.5)."""
    data = reason.encode("utf-8")[:123]
    return data.decode("utf-8", "ignore")
