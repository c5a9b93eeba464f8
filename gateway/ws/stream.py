"""A WebSocket as a :class:`trio.abc.Stream` of bytes, like Node ws's ``createWebSocketStream``.

Stream-oriented code (a line protocol, a TCP bridge) then runs over a WebSocket: each
``send_all`` is one binary message and ``receive_some`` hands out the bytes of incoming
messages, message boundaries ignored.  It wraps the gateway's server-side connection and
trio-websocket's client alike (anything with ``get_message``, ``send_message``, ``aclose``,
``closed``).  A plugin running a line protocol over it::

    from gateway.ws.stream import WebSocketStream

    async def upper(ws, session):
        stream = WebSocketStream(ws)
        buffer = b""
        while data := await stream.receive_some():  # b"": the client closed normally
            *lines, buffer = (buffer + data).split(b"\\n")
            for line in lines:
                await stream.send_all(line.upper() + b"\\n")
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, Protocol

import trio
from trio_websocket import CloseReason, ConnectionClosed

from gateway.ws.frames import CloseCode

__all__ = ["MessageConnection", "WebSocketStream"]

# Normal, going away, no status: end-of-file.
NORMAL_CLOSES = frozenset(
    {CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, CloseCode.NO_STATUS_RCVD}
)


class MessageConnection(Protocol):
    """What the adapter needs of a WebSocket: trio-websocket's connection interface."""

    @property
    def closed(self) -> CloseReason | None: ...

    async def get_message(self) -> str | bytes: ...

    async def send_message(self, message: str | bytes) -> None: ...

    async def aclose(self, code: int = ..., reason: str | None = ...) -> None: ...


class _Guard:
    """Raise :class:`trio.BusyResourceError` when two tasks use one direction at once."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._busy = False

    def __enter__(self) -> None:
        if self._busy:
            raise trio.BusyResourceError(f"another task is already {self._what} this stream")
        self._busy = True

    def __exit__(self, *exc_info: object) -> None:
        self._busy = False


class WebSocketStream(trio.abc.Stream):
    """A :class:`trio.abc.Stream` over one WebSocket connection ``ws``.

    * :meth:`send_all` sends one binary message per call (empty data sends nothing).
    * :meth:`receive_some` returns bytes of the current message and keeps the rest for the
      next call.  Empty messages are skipped.  A text message is UTF-8 encoded with
      ``text="accept"``; with ``text="reject"`` (the default) it closes the WebSocket with
      1003 and raises :class:`trio.BrokenResourceError`.
    * The peer closing with 1000, 1001 or no status (1005) is end-of-file: ``receive_some``
      returns ``b""`` from then on.  Any other close (1006 abnormal, 1011...) raises
      :class:`trio.BrokenResourceError`, as does ``send_all`` once the WebSocket is closed.
    * :meth:`aclose` closes the WebSocket with 1000 (idempotent); afterwards every method
      raises :class:`trio.ClosedResourceError`, including calls blocked at that moment.
    * Concurrent ``send_all``/``wait_send_all_might_not_block`` calls, or concurrent
      ``receive_some`` calls, raise :class:`trio.BusyResourceError`.

    Every method is a checkpoint.  The caller keeps owning ``ws``'s lifetime (for the
    gateway's connection: the handler must not return while the stream is in use).
    """

    def __init__(
        self, ws: MessageConnection, *, text: Literal["accept", "reject"] = "reject"
    ) -> None:
        if text not in ("accept", "reject"):
            raise ValueError(f"text must be 'accept' or 'reject', not {text!r}")
        self.ws = ws
        self._accept_text = text == "accept"
        self._pending = memoryview(b"")
        self._closed = False
        self._eof = False
        self._broken: str | None = None  # why receiving failed, once it has
        self._sending = _Guard("sending on")
        self._receiving = _Guard("receiving from")
        self._scopes: set[trio.CancelScope] = set()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as one binary message; returns once it is written."""
        with self._sending:
            await trio.lowlevel.checkpoint()
            self._check_sendable()
            if not data:
                return
            try:
                with self._cancelled_by_aclose():
                    await self.ws.send_message(bytes(data))
            except ConnectionClosed as exc:
                self._check_sendable()
                raise trio.BrokenResourceError("the WebSocket is closed") from exc

    async def wait_send_all_might_not_block(self) -> None:
        """Return at once (after a checkpoint): a send is only ever blocked by the transport,
        which neither connection exposes, and returning early is allowed."""
        with self._sending:
            await trio.lowlevel.checkpoint()
            self._check_sendable()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Up to ``max_bytes`` bytes (default: the rest of the current message); ``b""``
        once the peer closed normally."""
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)  # TypeError for 1.5, as trio's streams
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        with self._receiving:
            await trio.lowlevel.checkpoint()
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            if not self._pending:
                message = await self._next_message()
                if max_bytes is None or len(message) <= max_bytes:
                    return message  # whole (or b"": EOF), no copy
                self._pending = memoryview(message)
            chunk = self._pending[:max_bytes]
            self._pending = self._pending[len(chunk) :]
            return bytes(chunk)

    async def aclose(self) -> None:
        """Close the WebSocket with 1000 and wait for the closing handshake (bounded by the
        connection's own timeout).  Even if cancelled, the stream ends up closed."""
        if not self._closed:
            self._closed = True
            self._pending = memoryview(b"")
            for scope in self._scopes:
                scope.cancel()  # blocked send_all/receive_some raise ClosedResourceError
            await self.ws.aclose(CloseCode.NORMAL_CLOSURE)
        await trio.lowlevel.checkpoint()

    # -- internals ----------------------------------------------------------------------------

    def _check_sendable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        reason = self.ws.closed
        if reason is not None:
            raise trio.BrokenResourceError(f"the WebSocket is closed ({reason.code})")

    @contextmanager
    def _cancelled_by_aclose(self) -> Iterator[None]:
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                yield
            finally:
                self._scopes.discard(scope)
        if scope.cancelled_caught:
            raise trio.ClosedResourceError("the stream was closed")

    async def _next_message(self) -> bytes:
        """The next non-empty message as bytes, or ``b""`` at end-of-file."""
        while not self._eof:
            if self._broken is not None:
                raise trio.BrokenResourceError(self._broken)
            message: str | bytes = b""
            try:
                with self._cancelled_by_aclose():
                    message = await self.ws.get_message()
            except ConnectionClosed as exc:
                if self._closed:
                    raise trio.ClosedResourceError("the stream was closed") from None
                code = exc.reason.code if exc.reason is not None else CloseCode.ABNORMAL_CLOSURE
                if code in NORMAL_CLOSES:
                    self._eof = True
                    break
                self._broken = f"the WebSocket closed with {code}"
                raise trio.BrokenResourceError(self._broken) from exc
            if isinstance(message, str):
                if not self._accept_text:
                    self._broken = "received a text message on a binary stream"
                    await self.ws.aclose(CloseCode.UNSUPPORTED_DATA, "unsupported data")
                    raise trio.BrokenResourceError(self._broken)
                message = message.encode("utf-8")
            if message:
                return message
        return b""
