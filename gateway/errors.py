"""One exception tree for the whole gateway.

Decisions in the pure core are returned as values (:class:`gateway.core.decisions.Reject`);
exceptions here unwind.  Each third-party library's errors are translated into these at exactly
one boundary, so callers never need to know whether h11, trio-websocket or the OS raised.

The tree (``tests/test_errors.py`` keeps it true: every exception class of this module is here,
under its base)::

    GatewayError                    every error the gateway raises on purpose
        ConfigError                 an invalid config, with its key path
            ConfigErrors            several, found in one pass (gateway check)
            PluginLoadError         a plugin that cannot be imported or is no plugin
        ListenError                 an address that cannot be bound
        Refused                     a request answered with a refusal (a Reject), not served
        CloseSession                a handler closing its WebSocket with a code and reason
        WebSocketError              the WebSocket engine's own errors
            WebSocketProtocolError  the peer broke RFC 6455 or a limit (fails with its code)
            InvalidState            a frame asked of the protocol in a state that forbids it
            StreamLost              the stream failed, or a slow consumer's frames were dropped
            MessageTypeError        a message that is neither str nor bytes (also TypeError,
                                    ValueError)
        UpstreamError               the legacy site failed (502)
            UpstreamTimeout         ... or did not answer in time (504)

What a handler sees when its peer closes is trio-websocket's ``ConnectionClosed`` (re-exported
by :mod:`gateway.api`), not a class of this tree: the engine keeps trio-websocket's interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.core.decisions import Reject


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is invalid.

    ``path`` is the dotted key path (``plugins.chat.options.max_members``) and ``problem`` says
    what is wrong with it; ``str()`` gives ``"path: problem"`` so the CLI can print it as is.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


class ConfigErrors(ConfigError):
    """Several problems found in one pass (``gateway check`` lists them all): ``errors`` in
    the order found; ``path`` and ``problem`` are the first one's, ``str()`` one per line."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        self.errors = tuple(errors)
        super().__init__(self.errors[0].path, self.errors[0].problem)

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors)


class ListenError(GatewayError):
    """An address cannot be bound (in use, not ours): the config may be right, so this is not
    a :class:`ConfigError`; the message names the address and the way out."""


class PluginLoadError(ConfigError):
    """A plugin named by ``use = "module:attr"`` could not be imported or is not a plugin."""


class Refused(GatewayError):
    """A request is answered with ``reject`` (its status, detail and headers) instead of being
    served: a WebSocket handshake refused before the 101 (capacity, auth, a plugin's veto), or
    a request the proxy cannot forward (a body too large, malformed or too slow).  Raised by the
    I/O shells, caught where the answer is written."""

    def __init__(self, reject: Reject) -> None:
        self.reject = reject
        super().__init__(f"{reject.status} {reject.detail}")


class CloseSession(GatewayError):
    """Raised by a handler to close its WebSocket with ``code`` and ``reason``.

    RFC 6455 §7.4: application codes live in 4000-4999; 1000-2999 are protocol codes of which
    only those a server may send are accepted here.
    """

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        if not is_sendable_close_code(code):
            raise ValueError(f"close code {code} may not be sent by an endpoint (RFC 6455 §7.4)")
        if len(reason.encode("utf-8")) > 123:
            # §5.5: control frame payload ≤ 125 bytes, 2 of which hold the code.
            raise ValueError("close reason longer than 123 UTF-8 bytes")
        self.code = code
        self.reason = reason
        super().__init__(code, reason)


_RESERVED_NOT_SENDABLE = frozenset({1004, 1005, 1006, 1015})


def is_sendable_close_code(code: int) -> bool:
    """Whether an endpoint may put ``code`` in a Close frame (RFC 6455 §7.4.1, §7.4.2)."""
    if 1000 <= code <= 1014:
        return code not in _RESERVED_NOT_SENDABLE
    return 3000 <= code <= 4999


class WebSocketError(GatewayError):
    """Base of the WebSocket engine's own errors (:mod:`gateway.ws`).  What a handler sees
    when its connection closes is :class:`trio_websocket.ConnectionClosed`, as trio-websocket
    raises it (the engine keeps that interface); these are what the engine raises inside."""


class WebSocketProtocolError(WebSocketError):
    """The peer broke RFC 6455 or a limit: the connection fails with ``code`` (§7.1.7), a
    :class:`gateway.ws.frames.CloseCode`, and ``reason`` (fixed text, never the peer's bytes)."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(code, reason)


class InvalidState(WebSocketError):
    """A frame was asked of the sans-I/O protocol in a state that forbids it (a message
    after our Close): a bug in the caller, which checks the state first."""


class StreamLost(WebSocketError):
    """The stream failed (or was closed) under a write, or the frames waited for were dropped
    (a slow consumer's queue)."""


class MessageTypeError(WebSocketError, TypeError, ValueError):
    """A WebSocket message that is neither ``str`` nor bytes-like.  A :class:`ValueError` as
    trio-websocket raises for it, and a :class:`TypeError` as it really is."""


class UpstreamError(GatewayError):
    """The legacy site behind the proxy failed: refused, unreachable, broken or malformed.

    ``status`` is what the client is answered when nothing of the response was sent yet (RFC
    9110 §15.6.3, 502); once a response has started, the client's connection is cut instead.
    """

    status = 502

    def __init__(self, detail: str) -> None:
        self.detail = detail  # fixed text, never input: it becomes the response body
        super().__init__(detail)


class UpstreamTimeout(UpstreamError):
    """The upstream did not connect or answer in time (RFC 9110 §15.6.5, 504)."""

    status = 504
