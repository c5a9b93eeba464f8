"""The plugin API: what a WebSocket handler plugin sees and may return.

The smallest plugin is one async function ``async def handler(ws, session)``.  A class plugin
subclasses :class:`Plugin` to get typed options, a lifespan, a pure veto (:meth:`Plugin.check`)
and access to its mount (client set, broadcast, groups).  The handler contract:

* returning closes the WebSocket with 1000;
* the peer closing (``ConnectionClosed`` escaping the handler) is a normal end;
* ``raise CloseSession(code, reason)`` closes with that code;
* any other exception closes with 1011 and is logged with the session id; other connections
  are untouched;
* server shutdown closes with 1001.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar
from urllib.parse import parse_qs

from gateway.core import headers as hdr
from gateway.core.decisions import Reject
from gateway.errors import CloseSession
from gateway.log import session_log
from gateway.ws.connection import WebSocketConnection

if TYPE_CHECKING:
    from gateway.mount import Mount

__all__ = [
    "Accept",
    "CloseSession",
    "Handler",
    "NoOptions",
    "Plugin",
    "Reject",
    "Session",
    "UpgradeRequest",
    "WebSocketConnection",
]


@dataclass(frozen=True)
class NoOptions:
    """The options type of a plugin that takes none (any key in ``options`` is an error)."""


@dataclass(frozen=True)
class Accept:
    """Returned by :meth:`Plugin.check` to accept and add headers to the 101 response
    (e.g. ``Set-Cookie``), as the ``headers`` event of Node's ``ws`` allows."""

    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class UpgradeRequest:
    """A validated WebSocket handshake, as authenticators and :meth:`Plugin.check` see it.

    Header names are lowercase; values are the client's, decoded as latin-1.
    """

    mount: str
    path: str
    params: dict[str, str]
    query: str
    headers: tuple[tuple[str, str], ...]
    origin: str | None
    remote: str
    subprotocols: tuple[str, ...]
    principal: Any = None  # set once authentication has run

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        name = name.lower()
        return next((v for n, v in self.headers if n == name), None)

    @property
    def query_params(self) -> dict[str, list[str]]:
        return parse_qs(self.query, keep_blank_values=True)


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
    remote: str
    subprotocol: str | None
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

    def __init__(self, options: OptionsT, mount: Mount) -> None:
        self.options = options
        self.mount = mount

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Entered before the server accepts connections, left after the last session ended.
        Override with an ``@asynccontextmanager`` to start background tasks (open a nursery
        inside it) or to open shared resources."""
        return _no_lifespan()

    def check(self, request: UpgradeRequest) -> Reject | Accept | None:
        """A pure veto before the 101: return a :class:`Reject` to refuse, :class:`Accept`
        to add response headers, or ``None`` to accept.  Runs after Origin and auth."""
        return None

    async def handle(self, ws: WebSocketConnection, session: Session) -> None:
        """Serve one session; see the module docstring for how it ends."""
        raise NotImplementedError(f"{type(self).__name__} must implement handle()")
