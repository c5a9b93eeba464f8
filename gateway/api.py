"""The plugin API: everything a WebSocket handler plugin sees, may return and may import.

A plugin imports from this module only (and :mod:`gateway.testing` in its tests); the names in
``__all__`` are the public surface (``tests/test_api.py`` pins the list).

The smallest plugin is one async function ``async def handler(ws, session)``.  A class plugin
subclasses :class:`Plugin` to get typed options, a lifespan, a veto before the 101
(:meth:`Plugin.check`, a function or a coroutine), the path parameters it needs
(:attr:`Plugin.path_params`, checked against the mount's path when the config loads) and
access to its mount (client set, broadcast, groups).  The handler contract:

* returning closes the WebSocket with 1000;
* the peer closing (``ConnectionClosed`` escaping the handler) is a normal end;
* ``raise CloseSession(code, reason)`` closes with that code;
* any other exception closes with 1011 and is logged with the session id; other connections
  are untouched;
* server shutdown closes with 1001.

:class:`UpgradeRequest` (what :meth:`Plugin.check` and authenticators see) and
:class:`Session` (what the handler sees) name the same things the same way: ``id`` (the same
value on both), ``mount``, ``path``, ``params``, ``query``/``query_params``, ``headers``/
``header()``, ``origin``, ``remote`` (an :class:`Address`), ``subprotocols`` (the client's
offer), ``subprotocol`` (the choice), ``principal`` and ``log``.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar
from urllib.parse import parse_qs

from trio_websocket import CloseReason, ConnectionClosed

from gateway.core import headers as hdr
from gateway.core.decisions import Reject
from gateway.errors import CloseSession, ConfigError, is_sendable_close_code
from gateway.log import safe, session_log
from gateway.mount import Group, Mount
from gateway.ws.connection import WebSocketConnection
from gateway.ws.frames import CloseCode
from gateway.ws.stream import WebSocketStream

__all__ = [
    "Accept",
    "Address",
    "CloseCode",
    "CloseReason",
    "CloseSession",
    "ConfigError",
    "ConnectionClosed",
    "Group",
    "Handler",
    "Mount",
    "NoOptions",
    "Plugin",
    "Reject",
    "Session",
    "UpgradeRequest",
    "Verdict",
    "WebSocketConnection",
    "WebSocketStream",
    "is_sendable_close_code",
    "safe",
]


@dataclass(frozen=True)
class NoOptions:
    """The options type of a plugin that takes none (any key in ``options`` is an error)."""


class _Keep(enum.Enum):
    GATEWAY_CHOICE = "the gateway's choice"


@dataclass(frozen=True)
class Accept:
    """Returned by :meth:`Plugin.check` to accept with more to say in the 101 response.

    ``headers`` are added to it (e.g. ``Set-Cookie``, as the ``headers`` event of Node's
    ``ws`` allows).  ``subprotocol``, when given, is the plugin's own choice among
    ``request.subprotocols`` (``None``: none), replacing the gateway's (``request.subprotocol``,
    from the mount's ``subprotocols`` list): how a relay answers with what its upstream chose.
    A subprotocol the client did not offer is a plugin bug (RFC 6455 §4.1 makes the client
    fail the connection): the handshake is refused with 500 and the error logged.
    """

    headers: tuple[tuple[str, str], ...] = ()
    subprotocol: str | Literal[_Keep.GATEWAY_CHOICE] | None = _Keep.GATEWAY_CHOICE

    @property
    def chooses_subprotocol(self) -> bool:
        return self.subprotocol is not _Keep.GATEWAY_CHOICE


# What Plugin.check() returns (or its coroutine does): refuse, accept with more, or accept.
Verdict = Reject | Accept | None


@dataclass(frozen=True, slots=True)
class Address:
    """Where a client connects from: ``host``, an IP address as text, and ``port``.

    Behind one of ``server.trusted_proxies``, the forwarded client's address: ``port`` is then
    ``None`` (``X-Forwarded-For`` carries no port).  ``str()`` is ``"203.0.113.7:51234"``,
    ``"[2001:db8::7]:51234"`` or, without a port, the bare address.
    """

    host: str
    port: int | None = None

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """``host`` as an :mod:`ipaddress` object (e.g. to test a network membership)."""
        return ipaddress.ip_address(self.host)

    def __str__(self) -> str:
        if self.port is None:
            return self.host
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _header(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    name = name.lower()
    return next((v for n, v in headers if n == name), None)


@dataclass(frozen=True)
class UpgradeRequest:
    """A validated WebSocket handshake, as authenticators and :meth:`Plugin.check` see it.

    Header names are lowercase; values are the client's, decoded as latin-1.  ``id`` is the
    session's id if the handshake is accepted (``session.id``), so a resource a check opens
    can be found again by the handler.  ``subprotocol`` is the gateway's choice from the
    mount's ``subprotocols`` list (``None``: none), which the 101 carries unless the check's
    :class:`Accept` chooses another; ``remote`` is ``None`` only for a stream without an
    address.
    """

    id: str
    mount: Mount
    path: str
    params: dict[str, str]
    query: str
    headers: tuple[tuple[str, str], ...]
    origin: str | None
    remote: Address | None
    subprotocols: tuple[str, ...]
    subprotocol: str | None = None
    principal: Any = None  # set once authentication has run

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        return _header(self.headers, name)

    @property
    def query_params(self) -> dict[str, list[str]]:
        return parse_qs(self.query, keep_blank_values=True)

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger that prefixes every line with ``[mount id]``, as ``session.log`` will."""
        return session_log(self.mount.name, self.id)


@dataclass(frozen=True, slots=True)
class Session:
    """One accepted WebSocket session: who, where and how, fixed at the handshake.

    Slotted, and the handshake's headers are kept as one packed block
    (:func:`gateway.core.headers.pack`): a session lives as long as its connection, mostly
    idle, so it is kept small.
    """

    id: str
    mount: Mount
    path: str
    params: dict[str, str]
    query: str
    principal: Any
    origin: str | None
    remote: Address | None
    subprotocol: str | None
    subprotocols: tuple[str, ...] = ()  # the client's offer
    header_block: bytes = b""  # the handshake's headers, packed (see raw_headers)

    @property
    def raw_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """The handshake's headers as received (lowercase names), unpacked on use."""
        return hdr.unpack(self.header_block)

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """The handshake's headers, decoded (computed on use: most sessions never ask, and
        an idle connection is cheaper without a second copy)."""
        return tuple((n.decode("latin-1"), v.decode("latin-1")) for n, v in self.raw_headers)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        return _header(self.headers, name)

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger that prefixes every line with ``[mount session-id]``."""
        return session_log(self.mount.name, self.id)

    @property
    def query_params(self) -> dict[str, list[str]]:
        return parse_qs(self.query, keep_blank_values=True)


Handler = Callable[[WebSocketConnection, Session], Awaitable[None]]

OptionsT = TypeVar("OptionsT")


@asynccontextmanager
async def _no_lifespan() -> AsyncIterator[None]:
    yield


class Plugin(Generic[OptionsT]):
    """Base class for class plugins.  Subclasses set ``options_type`` (a frozen dataclass whose
    fields are the keys allowed in ``[plugins.NAME.options]``) and implement :meth:`handle`.

    One instance serves one mount; the same class mounted twice gives two instances, each
    with its own options and its own :attr:`mount`.
    """

    options_type: ClassVar[type[Any]] = NoOptions
    # The ``{name}`` segments handle() reads from session.params: a mount whose path lacks one
    # is a config error (``gateway check`` names both).  A plugin whose needs depend on its
    # options sets its own in __init__ (the chat needs {room} in one format only).
    path_params: tuple[str, ...] = ()

    def __init__(self, options: OptionsT, mount: Mount) -> None:
        self.options = options
        self.mount = mount

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Entered before the server accepts connections, left after the last session ended.
        Override with an ``@asynccontextmanager`` to start background tasks (open a nursery
        inside it) or to open shared resources."""
        return _no_lifespan()

    def check(self, request: UpgradeRequest) -> Verdict | Awaitable[Verdict]:
        """A veto before the 101: return a :class:`Reject` to refuse, :class:`Accept` to add
        response headers or choose the subprotocol, or ``None`` to accept.  Runs after Origin
        and auth.  May be ``async def`` (as websockets' ``process_request``), e.g. to ask
        another service; it runs within the mount's ``handshake_timeout``."""
        return None

    async def handle(self, ws: WebSocketConnection, session: Session) -> None:
        """Serve one session; see the module docstring for how it ends."""
        raise NotImplementedError(f"{type(self).__name__} must implement handle()")
