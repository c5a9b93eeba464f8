"""``plugins.relay:Relay``: relay a WebSocket to another WebSocket server (e.g. the legacy site's).

Each client session opens one upstream connection (trio-websocket's client) to ``url`` and
relays messages both ways, text as text and binary as binary, each side backpressuring the
other (a message is read from one side only once the previous one was written to the other).

Closing is propagated both ways: the upstream closing with 4001 closes the client with 4001
(same reason); the client closing with 4002 closes the upstream with 4002.  Codes that cannot
be sent on (1005 "no status": 1000; 1006 "connection lost": 1011 toward the client, 1001
toward the upstream) are mapped.  An unreachable upstream, a refused upstream handshake or no
upstream handshake within ``connect_timeout`` closes the client with **1011** and the reason
``"bad gateway"``.  (RFC 6455's registry has 1014 "Bad Gateway", but wsproto, and so
trio-websocket and the gateway's own test client, reject 1014 as an unknown reserved code:
1011 is understood by every client.)

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
``max_message_size`` (a larger one closes the upstream with 1009 and the client with 1009).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import trio
import trio_websocket
from trio_websocket import CloseReason, ConnectionClosed

from gateway.api import CloseSession, Plugin, Session, WebSocketConnection
from gateway.auth_upstream import client_address
from gateway.errors import ConfigError, is_sendable_close_code
from gateway.mount import Mount

BAD_GATEWAY = 1011  # see the module docstring for why not 1014
CLOSE_TIMEOUT = 5.0  # seconds for the upstream's closing handshake


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
        result: Ending | CloseSession
        try:
            async with trio.open_nursery() as nursery:  # runs the upstream client's reader
                result = await self._session(nursery, ws, session)
                nursery.cancel_scope.cancel()
        except ExceptionGroup as group:
            # trio-websocket raises a refused handshake (ConnectionRejected) in its reader task.
            refused, rest = group.split(trio_websocket.HandshakeError)
            if rest is not None or refused is None:
                raise
            session.log.warning("upstream %s refused: %r", self.options.url, refused.exceptions[0])
            result = CloseSession(BAD_GATEWAY, "bad gateway")
        if isinstance(result, CloseSession):
            raise result
        if result.side == "upstream":
            raise _toward_client(result)
        # The client closed: the gateway already answered its Close; nothing more to send.

    async def _session(
        self, nursery: trio.Nursery, ws: WebSocketConnection, session: Session
    ) -> Ending | CloseSession:
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
            session.log.warning("upstream %s unreachable: %r", self.options.url, exc)
            return CloseSession(BAD_GATEWAY, "bad gateway")
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
            session.log.warning(
                "upstream chose subprotocol %r, the client was given %r",
                upstream.subprotocol,
                session.subprotocol,
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
                endings.append(_ending(names[0], exc.reason))
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
