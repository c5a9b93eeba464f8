"""The server side of one WebSocket after its 101, as a sans-I/O state machine.

Bytes in (:meth:`Protocol.receive_data`, :meth:`Protocol.receive_eof`), messages out
(:meth:`Protocol.events_received`); frames asked for are returned by the ``send_*`` methods,
frames the protocol decides on itself (pong replies, the Close echo, keepalive pings) wait in
:meth:`Protocol.data_to_send`.  No I/O, no clock (``now`` is passed in), no trio: the trio
shell (:mod:`gateway.ws.connection`) reads, writes, waits and times, and every rule below is
tested without it (tests/ws/test_protocol.py).  It owns the parser (limits, inflate budget),
the compressor and the keepalive bookkeeping; the shell owns the queues.

The rules, in the order they apply (RFC 6455):

* **Rule 1 (§5.5.1, §7.1.2): one Close each way.**  :meth:`send_close` queues our Close
  once; the state leaves ``OPEN`` for good.  A Close from the peer is echoed with its code and
  reason unless ours was sent already (then it is the reply: the handshake is complete).
* **Rule 2 (§7.1.7): a peer that breaks the protocol is failed, but not before what it sent
  earlier is delivered.**  The parser's error is kept (:attr:`failure`) and receiving stops;
  the Close carrying its code goes out when the shell calls :meth:`fail` or
  :meth:`send_close` (whose code it then overrides), once the messages before it are taken.
* **Rule 3 (§7.1.1): the server closes TCP first.**  :meth:`close_expected` says when: our
  Close is sent and nothing more will be received.
* **Rule 4 (§5.5.2, §5.5.3): every ping is answered, pongs answer pings.**  A pong answers
  the keepalive ping with its payload, and every handler ping up to the one with its payload.
* **Rule 5: what is reported.**  :attr:`close` is the first of: our Close, the peer's, the
  failure's, or 1006 when the stream ended without any (§7.1.5).
"""

from __future__ import annotations

import math
import os
from enum import IntEnum
from typing import Protocol as Interface

from gateway.errors import InvalidState, WebSocketProtocolError
from gateway.ws import frames
from gateway.ws.deflate import DeflateParams, Deflater
from gateway.ws.frames import CloseCode, Opcode, Prepared
from gateway.ws.limits import Limits
from gateway.ws.parser import Close, FrameParser, Inflater, Ping, Pong

__all__ = ["Protocol", "Settable", "State"]

DEFAULT_LIMITS = Limits()


class State(IntEnum):
    OPEN = 1  # messages flow both ways
    CLOSING = 2  # a Close was sent or received, or receiving stopped: no new messages out
    CLOSED = 3  # both Closes exchanged, or the stream ended: nothing more goes either way


OPEN, CLOSING, CLOSED = State.OPEN, State.CLOSING, State.CLOSED


class Settable(Interface):
    """What waits for a pong (the shell's ``trio.Event``): set when it is answered."""

    def set(self) -> None: ...


class Protocol:
    """See the module docstring.  Attributes the shell reads on its hot paths are plain:
    :attr:`state`, :attr:`receiving`, :attr:`close`, :attr:`keepalive_due`."""

    __slots__ = (
        "_close_sent",
        "_deflater",
        "_interval",
        "_keepalive_payload",
        "_keepalive_sent",
        "_messages",
        "_outgoing",
        "_pings",
        "_timeout",
        "close",
        "failure",
        "keepalive_due",
        "keepalive_failed",
        "limits",
        "parser",
        "receiving",
        "state",
    )

    def __init__(
        self, limits: Limits = DEFAULT_LIMITS, compression: DeflateParams | None = None
    ) -> None:
        self.limits = limits
        inflater = None
        self._deflater: Deflater | None = None
        if compression is not None:
            inflater = Inflater(
                compression.client_window_bits,
                compression.client_no_context_takeover,
                rate=limits.max_inflate_rate,
                burst=limits.inflate_burst,
            )
            self._deflater = Deflater(compression)
        self.parser = FrameParser(limits.parser, inflater)
        self.state = OPEN
        self.receiving = True  # frames may still arrive (no Close, failure or EOF yet)
        self._close_sent = False
        self.close: Close | None = None  # what `closed` reports (Rule 5)
        self.failure: WebSocketProtocolError | None = None  # Rule 2: the Close still to send
        self._messages: list[str | bytes] = []
        self._outgoing: list[bytes] | None = None  # (created on need: most idle ones send none)
        # Keepalive: a ping every `interval`; no pong within `timeout` fails the peer.
        self._interval = limits.ping_interval
        self._timeout = limits.ping_timeout
        self.keepalive_due = math.inf  # when keepalive() must run next
        self._keepalive_payload: bytes | None = None  # the keepalive ping in flight
        self._keepalive_sent = 0.0
        self.keepalive_failed = False
        # Handler pings in flight, oldest first (created on first use: most never ping).
        self._pings: dict[bytes, Settable] | None = None

    # -- receiving ----------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray, now: float, room: int | None = None) -> None:
        """Parse ``data`` (``b""``: resume a paused parse) received at ``now``; messages go to
        :meth:`events_received`, replies to :meth:`data_to_send`.  ``room``: the bytes
        compressed messages may inflate to before the parse pauses (the shell's queue room)."""
        if not self.receiving:
            return
        parser = self.parser
        if room is not None:
            parser.room = room
        try:
            parser.feed(data, now)
        except WebSocketProtocolError as exc:
            self._failed(exc)
        # (_take_events, inlined: this is the hot path, once per read.)
        events = parser.events()
        if not events:
            return
        messages = self._messages
        for event in events:
            kind = type(event)
            if kind is str or kind is bytes:
                messages.append(event)  # type: ignore[arg-type]
            else:
                self._control(event)  # type: ignore[arg-type]
                if kind is Close:
                    break

    def read_buffer(self) -> memoryview | None:
        """Where to read the socket into while a large frame is arriving (the parser's buffer
        for its payload: :mod:`gateway.ws.parser`), else ``None`` (read as usual and call
        :meth:`receive_data`)."""
        return self.parser.read_buffer() if self.receiving else None

    def receive_into(self, count: int, now: float) -> None:
        """``count`` bytes were read into the last :meth:`read_buffer`: as
        :meth:`receive_data`."""
        if not self.receiving:
            return
        try:
            self.parser.feed_into(count, now)
        except WebSocketProtocolError as exc:
            self._failed(exc)
        self._take_events()

    def _failed(self, exc: WebSocketProtocolError) -> None:
        self.failure = exc  # Rule 2: delivered what came before, then fail
        self.receiving = False
        if self.state is OPEN:
            self.state = CLOSING

    def _take_events(self) -> None:
        events = self.parser.events()
        if not events:
            return
        messages = self._messages
        for event in events:
            kind = type(event)
            if kind is str or kind is bytes:
                messages.append(event)  # type: ignore[arg-type]
            else:
                self._control(event)  # type: ignore[arg-type]
                if kind is Close:
                    break

    def _control(self, event: Ping | Pong | Close) -> None:
        if isinstance(event, Ping):
            self._send(frames.frame(Opcode.PONG, event.payload))
        elif isinstance(event, Pong):
            self._pong(event.payload)
        else:
            self._receive_close(event)

    def receive_eof(self) -> None:
        """The stream ended (or failed): nothing more will arrive, nothing more can be sent."""
        self.receiving = False
        if self.close is None:
            self.close = Close(CloseCode.ABNORMAL_CLOSURE, "")  # §7.1.5: no Close frame
        self.state = CLOSED
        self.release_pings()

    def events_received(self) -> list[str | bytes]:
        """The messages parsed since the last call, in order (and forget them)."""
        messages = self._messages
        if messages:
            self._messages = []
        return messages

    @property
    def paused(self) -> bool:
        """Compressed frames wait in the parser (the queue's room ran out): feed ``b""``."""
        return self.parser.paused

    def _receive_close(self, event: Close) -> None:
        self.receiving = False
        if self.close is None:
            self.close = event
        if self._close_sent:
            self.state = CLOSED  # Rule 1: the reply to ours; the handshake is complete
            return
        # Rule 1: echo the peer's code and reason (browsers report the *received* frame).
        self._close_sent = True
        self.state = CLOSING
        code = None if event.code == CloseCode.NO_STATUS_RCVD else event.code
        self._send(frames.frame(Opcode.CLOSE, frames.close_payload(code, event.reason)))

    # -- sending ------------------------------------------------------------------------------

    def send_message(self, message: str | bytes) -> bytes:
        """The frame for ``message`` (text for ``str``), compressed if agreed.

        :raises InvalidState: a Close was sent or received, or the stream ended (:attr:`close`
            is set: the shell checks it first).
        :raises gateway.errors.MessageTypeError: neither ``str`` nor bytes-like."""
        if self.close is not None:
            raise InvalidState("no message may follow a Close (RFC 6455 §5.5.1)")
        deflater = self._deflater
        if deflater is not None:
            return deflater.frame(message)
        return frames.message_frame(message)

    def send_binary_header(self, payload: bytes) -> bytes | None:
        """The header of the binary frame carrying ``payload`` as is, for the shell to write
        followed by ``payload`` (no joined copy of a large message); ``None`` if this
        connection compresses (then :meth:`send_message`).  :raises InvalidState: as
        :meth:`send_message`."""
        if self.close is not None:
            raise InvalidState("no message may follow a Close (RFC 6455 §5.5.1)")
        if self._deflater is not None:
            return None
        return frames.frame_header(Opcode.BINARY, len(payload))

    def send_prepared(self, prepared: Prepared) -> bytes:
        """The frame of a message shared by many connections: the shared one, unless this
        connection compresses.  :raises InvalidState: as :meth:`send_message`."""
        if self._deflater is not None:
            return self.send_message(prepared.message)
        if self.close is not None:
            raise InvalidState("no message may follow a Close (RFC 6455 §5.5.1)")
        return prepared.frame

    def send_ping(self, payload: bytes, waiter: Settable) -> bytes:
        """A ping frame; ``waiter`` is set by its pong (Rule 4), or by :meth:`release_pings`.

        :raises ValueError: a ping with ``payload`` is in flight, or it is over 125 bytes.
        :raises InvalidState: as :meth:`send_message`."""
        if len(payload) > 125:
            raise ValueError("a ping payload is at most 125 bytes (RFC 6455 §5.5)")
        if self.close is not None:
            raise InvalidState("no ping may follow a Close")
        pings = self._pings
        if pings is None:
            pings = self._pings = {}
        if payload in pings:
            raise ValueError(f"a ping with payload {payload!r} is already in flight")
        pings[payload] = waiter
        return frames.frame(Opcode.PING, payload)

    def send_pong(self, payload: bytes = b"") -> bytes:
        """An unsolicited pong frame (a heartbeat, §5.5.3).

        :raises ValueError: the payload is over 125 bytes.
        :raises InvalidState: as :meth:`send_message`."""
        if len(payload) > 125:
            raise ValueError("a pong payload is at most 125 bytes (RFC 6455 §5.5)")
        if self.close is not None:
            raise InvalidState("no pong may follow a Close")
        return frames.frame(Opcode.PONG, payload)

    def send_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> bool:
        """Queue our Close (once, Rule 1) in :meth:`data_to_send`; a pending failure's code
        and reason take its place (Rule 2).  Returns ``True`` if this call queued it."""
        failure, self.failure = self.failure, None
        if failure is not None:
            code, reason = failure.code, failure.reason
        if self.close is None:
            self.close = Close(code, reason)
        if self._close_sent:
            return False
        self._close_sent = True
        if self.state is OPEN:
            self.state = CLOSING
        self._send(frames.frame(Opcode.CLOSE, frames.close_payload(code, reason)))
        return True

    def fail(self, code: int, reason: str) -> bool:
        """§7.1.7 Fail the WebSocket Connection: our Close with ``code`` (unless one was sent,
        or a pending failure's code wins), nothing more is received, and TCP is closed once
        it is written (:meth:`close_expected`).  Returns ``True`` if the Close was queued."""
        self.receiving = False
        return self.send_close(code, reason)

    @property
    def close_sent(self) -> bool:
        return self._close_sent

    def data_to_send(self) -> list[bytes]:
        """The frames the protocol decided to send (pong replies, Closes, keepalive pings),
        in order (and forget them)."""
        out = self._outgoing
        if out is None:
            return []
        self._outgoing = None
        return out

    def _send(self, frame: bytes) -> None:
        out = self._outgoing
        if out is None:
            self._outgoing = [frame]
        else:
            out.append(frame)

    def close_expected(self) -> bool:
        """Rule 3: nothing more will be received and our Close is sent (or the stream
        ended), so the shell writes what is queued and closes TCP."""
        return not self.receiving and (self._close_sent or self.state is CLOSED)

    def connection_closed(self) -> None:
        """The shell closed the stream (or lost it): as :meth:`receive_eof`."""
        self.receive_eof()

    # -- pings and keepalive ------------------------------------------------------------------

    def start_keepalive(self, now: float) -> None:
        if self._interval > 0:
            self.keepalive_due = now + self._interval

    def keepalive(self, now: float) -> bool:
        """The keepalive clock ran out (:attr:`keepalive_due`): a ping is queued in
        :meth:`data_to_send` and ``True`` returned; or the last one was never answered, the
        peer is gone (half-open TCP): our Close 1011 is queued and ``False`` returned (the
        shell bounds how long it waits for the reply)."""
        if self.state is not OPEN:
            self.keepalive_due = math.inf  # closing: the close has its own deadline
            return True
        if self._keepalive_payload is not None:
            self.keepalive_failed = True
            self.keepalive_due = math.inf
            self.send_close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            return False
        payload = self._keepalive_payload = os.urandom(4)
        self._keepalive_sent = now
        self.keepalive_due = now + self._timeout
        self._send(frames.frame(Opcode.PING, payload))
        return True

    def _pong(self, payload: bytes) -> None:
        if payload == self._keepalive_payload:
            self._keepalive_payload = None
            self.keepalive_due = self._keepalive_sent + self._interval
        pings = self._pings
        if pings is None or payload not in pings:
            return  # unsolicited: a heartbeat
        while pings:
            key = next(iter(pings))
            pings.pop(key).set()
            if key == payload:
                break
        if not pings:
            self._pings = None  # (an idle connection keeps no empty dict)

    def unanswered(self, payload: bytes, waiter: Settable) -> bool:
        """After ``waiter`` fired or its wait was cancelled: ``True`` if no pong answered it
        (the connection closed, or the caller gave up); either way its payload is free."""
        pings = self._pings
        if pings is not None and pings.get(payload) is waiter:
            del pings[payload]
            if not pings:
                self._pings = None
            return True
        return False

    def release_pings(self) -> None:
        """Nothing more will be received: wake every handler ping (each then raises)."""
        for waiter in (self._pings or {}).values():
            waiter.set()
