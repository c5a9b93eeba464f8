"""What the front door decided about one request: plain values, no behaviour.

The pure core returns one of these for every request; the trio shell carries it out.  Keeping
them as data is what lets the whole decision table be tested without a socket.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.upstream import Upstream

# RFC 9110 §15 reason phrases.  Responses only ever use this table: a reason phrase built from
# input would be a response-splitting hole (h11 does not validate the phrases it sends).
REASONS: dict[int, bytes] = {
    100: b"Continue",
    101: b"Switching Protocols",
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    203: b"Non-Authoritative Information",
    204: b"No Content",
    205: b"Reset Content",
    206: b"Partial Content",
    300: b"Multiple Choices",
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    304: b"Not Modified",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    402: b"Payment Required",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    406: b"Not Acceptable",
    407: b"Proxy Authentication Required",
    408: b"Request Timeout",
    409: b"Conflict",
    410: b"Gone",
    411: b"Length Required",
    412: b"Precondition Failed",
    413: b"Content Too Large",
    414: b"URI Too Long",
    415: b"Unsupported Media Type",
    416: b"Range Not Satisfiable",
    417: b"Expectation Failed",
    421: b"Misdirected Request",
    422: b"Unprocessable Content",
    426: b"Upgrade Required",
    428: b"Precondition Required",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


@dataclass(frozen=True)
class Reject:
    """Answer with ``status`` and a short plain-text ``detail`` (fixed text, never input).

    ``close`` ends the connection after the response, for errors after which the byte stream
    cannot be trusted (RFC 9112 §6.3) or which we do not want to keep serving.
    """

    status: int
    detail: str
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False

    def __post_init__(self) -> None:
        if self.status not in REASONS or self.status < 400:
            raise ValueError(f"Reject needs a 4xx/5xx status from REASONS, got {self.status}")


@dataclass(frozen=True)
class Health:
    """Answer the liveness (``ready=False``) or readiness (``ready=True``) probe."""

    ready: bool = False


@dataclass(frozen=True)
class Proxy:
    """Forward the request to the legacy site at ``upstream`` (``[proxy]``); ``path`` is the
    raw URL path that chose the upstream; ``request_buffering``: read the request body whole
    before the upstream exchange (else stream it)."""

    upstream: Upstream
    path: str
    request_buffering: bool = True


@dataclass(frozen=True)
class Static:
    """Serve the static file behind this (raw, undecoded) URL path.

    ``fallback``: when a static root and a proxy are both configured, a file that does not
    exist is not a 404 but proxied (the shell carries that out: only it can look at files).
    """

    path: str
    fallback: Proxy | None = None


@dataclass(frozen=True)
class Destroy:
    """Close the socket without writing a byte (an upgrade for a path nobody serves)."""

    reason: str


@dataclass(frozen=True)
class HandshakeInfo:
    """What RFC 6455 §4.2.1 validation extracted from a valid opening handshake."""

    key: bytes
    subprotocols: tuple[str, ...]
    extensions: tuple[str, ...]
    origin: str | None
    host: str


@dataclass(frozen=True)
class MountRoute:
    """What the pure core needs to know of a mount: its name and its Origin policy."""

    name: str
    origins: tuple[str, ...] | None  # normalised; None: same origin as Host
    require_origin: bool = False


@dataclass(frozen=True)
class Upgrade:
    """Hand the connection to ``mount`` once the shell has run auth and the plugin's veto."""

    mount: MountRoute
    params: dict[str, str]
    handshake: HandshakeInfo
    path: str
    query: str = ""


Decision = Reject | Health | Static | Proxy | Destroy | Upgrade
