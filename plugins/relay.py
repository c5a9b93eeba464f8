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

**Subprotocols — the honest design.**  End-to-end negotiation would need the upstream's choice
before the client's 101, but the 101 is sent before a handler runs, and the only hook before
it (:meth:`Plugin.check`) is synchronous, so it cannot connect upstream.  Opening the upstream
connection in an async authenticator would work, but would hand a connection across two hooks
with nothing to clean it up if the handshake then fails.  So the mount's ``subprotocols`` key
is the contract: list there what the upstream speaks (in preference order); the gateway
negotiates with the client from that list as for any mount, and the relay then offers the
upstream exactly the subprotocol the client was given (none if none).  If the upstream does
not accept that very subprotocol, both legs could not agree: the upstream is closed and the
client gets 1011 ``"upstream refused subprotocol"``.  A mount without ``subprotocols`` accepts
none from the client and offers none upstream.

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
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11
import trio
import trio_websocket
import wsproto.utilities
from trio_websocket import CloseReason, ConnectionClosed
from wsproto.connection import ConnectionState

from gateway.api import CloseSession, Plugin, Session, WebSocketConnection
from gateway.auth_upstream import client_address
from gateway.errors import ConfigError, is_sendable_close_code
from gateway.log import safe
from gateway.mount import Mount

BAD_GATEWAY = 1011  # see the module docstring for why not 1014
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

    def warn(self, log: logging.LoggerAdapter[logging.Logger], fault: Fault) -> None:
        """One WARNING line naming the upstream, rate-limited per kind of fault."""
        skipped = self._throttle.allow(fault.kind, trio.current_time())
        if skipped is None:
            return
        more = f" ({skipped} more since the last report)" if skipped else ""
        log.warning("upstream %s %s%s", safe(self.options.url), safe(fault.detail), more)

    def upstream_headers(self, session: Session) -> list[tuple[bytes, bytes]]:
        """The extra headers of the upstream handshake for ``session``."""
        headers = [(b"X-Forwarded-For", client_address(session.remote).encode("ascii"))]
        if self.options.forward_origin and session.origin is not None:
            headers.append((b"Origin", session.origin.encode("latin-1")))
        if self.options.forward_cookies:
            headers += [
                (b"Cookie", v.encode("latin-1")) for n, v in session.headers if n == "cookie"
            ]
        return headers

    async def handle(self, ws: WebSocketConnection, session: Session) -> None:
        result: Ending | CloseSession | Fault
        try:
            async with trio.open_nursery() as nursery:  # runs the upstream client's reader
                result = await self._session(nursery, ws, session)
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
        self, nursery: trio.Nursery, ws: WebSocketConnection, session: Session
    ) -> Ending | CloseSession | Fault:
        stream: trio.abc.Stream | None = None
        try:
            with trio.fail_after(self.options.connect_timeout):
                stream = await self._open_stream()
                upstream = await self._connect(nursery, stream, session)
            if isinstance(upstream, CloseSession):
                return upstream
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
        upstream = await trio_websocket.wrap_client_stream(
            nursery,
            stream,  # type: ignore[arg-type]  # any trio Stream works
            self._host_header,
            self._resource,
            subprotocols=offer,
            extra_headers=self.upstream_headers(session),
            max_message_size=self.mount.settings.max_message_size,
        )
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
