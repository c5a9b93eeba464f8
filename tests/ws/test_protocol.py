"""The sans-I/O protocol (gateway/ws/protocol.py) without trio: every close path, every limit,
every protocol error, pings and keepalive, and random byte splits.  What it writes is read
back by wsproto's client (an independent parser); nothing here imports trio."""

from __future__ import annotations

import ast
import math
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage

from gateway.errors import InvalidState, MessageTypeError
from gateway.ws.deflate import DeflateParams
from gateway.ws.frames import CloseCode, Prepared
from gateway.ws.limits import Limits
from gateway.ws.protocol import CLOSED, CLOSING, OPEN, Protocol, State
from tests.support.ws_frames import (
    BINARY,
    CLOSE,
    CONT,
    CORPUS,
    PING,
    PONG,
    TEXT,
    header_only,
    masked_frame,
)

NO_RATE = Limits(max_frame_rate=0, ping_interval=20, ping_timeout=10)


def server_frames(data: bytes | list[bytes]) -> list[Event]:
    """What a client makes of the bytes the protocol produced."""
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(b"".join(data) if isinstance(data, list) else data)
    return list(client.events())


class Waiter:
    """A pong waiter (the shell's trio.Event)."""

    def __init__(self) -> None:
        self.is_set = False

    def set(self) -> None:
        self.is_set = True


def close_of(proto: Protocol) -> CloseConnection:
    events = server_frames(proto.data_to_send())
    assert len(events) == 1 and isinstance(events[0], CloseConnection), events
    return events[0]


def test_the_protocol_imports_no_trio() -> None:
    code = (
        "import sys, gateway.ws.protocol, tests.support.ws_frames, wsproto.connection; "
        "assert 'trio' not in sys.modules, sorted(m for m in sys.modules if 'trio' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    # Nor do these tests themselves (hypothesis may load trio for its own integration).
    tree = ast.parse(Path(__file__).read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.split(".")[0] in ("trio", "trio_websocket")}
    assert "gateway.ws.connection" not in imported


# -- messages ----------------------------------------------------------------------------------


def test_messages_in_and_out() -> None:
    proto = Protocol(NO_RATE)
    assert proto.state is State.OPEN
    proto.receive_data(masked_frame(TEXT, "hé".encode()) + masked_frame(BINARY, b"\x00"), 1.0)
    assert proto.events_received() == ["hé", b"\x00"]
    assert proto.events_received() == []
    assert proto.data_to_send() == []
    frames = [proto.send_message("ok"), proto.send_message(b"\x01" * 70000)]
    events = server_frames(frames)
    assert isinstance(events[0], TextMessage) and events[0].data == "ok"
    assert isinstance(events[1], BytesMessage) and events[1].data == b"\x01" * 70000
    shared = Prepared("all")
    assert proto.send_prepared(shared) is shared.frame  # one frame for every connection
    with pytest.raises(MessageTypeError):
        proto.send_message(3)  # type: ignore[arg-type]


def test_compressed_both_ways() -> None:
    proto = Protocol(NO_RATE, DeflateParams())
    z = zlib.compressobj(wbits=-15)
    body = z.compress(b"a" * 500) + z.flush(zlib.Z_SYNC_FLUSH)
    proto.receive_data(masked_frame(BINARY, body[:-4], rsv=4), 0.0)
    assert proto.events_received() == [b"a" * 500]
    frame = proto.send_message("b" * 500)
    assert frame[0] & 0x40  # RSV1: compressed
    shared = Prepared("c" * 500)
    assert proto.send_prepared(shared) is not shared.frame  # compressed for this one


def test_a_ping_is_answered_with_its_payload() -> None:
    proto = Protocol(NO_RATE)
    proto.receive_data(masked_frame(PING, b"p1") + masked_frame(TEXT, b"m"), 0.0)
    assert proto.events_received() == ["m"]
    (pong,) = server_frames(proto.data_to_send())
    assert isinstance(pong, Pong) and pong.payload == b"p1"


# -- every close path ------------------------------------------------------------------------


def test_the_peer_closes_first_and_is_echoed() -> None:
    proto = Protocol(NO_RATE)
    proto.receive_data(
        masked_frame(TEXT, b"last") + masked_frame(CLOSE, struct.pack("!H", 4000) + b"bye"), 0.0
    )
    assert proto.events_received() == ["last"]
    assert (close_of(proto).code, proto.close) == (4000, proto.close)
    assert proto.close is not None and (proto.close.code, proto.close.reason) == (4000, "bye")
    assert proto.state is CLOSING and not proto.receiving
    assert proto.close_expected()  # Rule 3: the server closes TCP now
    assert not proto.send_close(1000)  # one Close each way
    assert proto.data_to_send() == []
    with pytest.raises(InvalidState):
        proto.send_message("too late")


def test_an_empty_close_is_1005_and_echoed_empty() -> None:
    proto = Protocol(NO_RATE)
    proto.receive_data(masked_frame(CLOSE, b""), 0.0)
    assert proto.close is not None and proto.close.code == CloseCode.NO_STATUS_RCVD
    assert proto.data_to_send()[0] == b"\x88\x00"  # a Close with no body


def test_we_close_first_and_the_reply_completes_the_handshake() -> None:
    proto = Protocol(NO_RATE)
    assert proto.send_close(1001, "going away")
    assert proto.state is CLOSING and proto.receiving
    assert not proto.close_expected()  # waiting for the reply
    event = close_of(proto)
    assert (event.code, event.reason) == (1001, "going away")
    proto.receive_data(masked_frame(TEXT, b"in flight"), 0.0)
    proto.receive_data(masked_frame(CLOSE, struct.pack("!H", 1000)), 0.0)
    assert proto.events_received() == ["in flight"]  # the shell drops it (closing)
    assert proto.state is CLOSED and proto.close_expected()
    assert proto.data_to_send() == []  # the reply is not answered
    assert proto.close is not None and proto.close.code == 1001  # ours came first


def test_a_protocol_error_waits_for_the_messages_before_it() -> None:
    proto = Protocol(NO_RATE)
    proto.receive_data(masked_frame(TEXT, b"before") + masked_frame(0x3, b"bad"), 0.0)
    assert proto.events_received() == ["before"]
    assert proto.failure is not None and proto.failure.code == CloseCode.PROTOCOL_ERROR
    assert not proto.receiving and proto.state is CLOSING
    assert proto.close is None  # not reported until the Close goes out (Rule 2)
    assert proto.data_to_send() == []
    proto.receive_data(masked_frame(TEXT, b"ignored"), 0.0)
    assert proto.events_received() == []
    assert proto.send_close(1000, "normal")  # the failure's code wins
    event = close_of(proto)
    assert (event.code, event.reason) == (1002, "reserved opcode")
    assert proto.close is not None and proto.close.code == 1002
    assert proto.close_expected()


def test_fail_closes_with_its_code_and_stops_receiving() -> None:
    proto = Protocol(NO_RATE)
    assert proto.fail(CloseCode.POLICY_VIOLATION, "policy")
    assert close_of(proto).code == 1008
    assert not proto.receiving and proto.close_expected()
    assert not proto.fail(1011, "again")  # one Close


def test_eof_without_a_close_is_1006() -> None:
    proto = Protocol(NO_RATE)
    waiter = Waiter()
    proto.send_ping(b"x", waiter)
    proto.receive_eof()
    assert proto.close is not None and proto.close.code == CloseCode.ABNORMAL_CLOSURE
    assert proto.state is CLOSED and proto.close_expected()
    assert waiter.is_set and proto.unanswered(b"x", waiter)  # released, not answered
    proto.receive_data(masked_frame(TEXT, b"after"), 0.0)
    assert proto.events_received() == []


def test_eof_after_a_close_keeps_the_close() -> None:
    proto = Protocol(NO_RATE)
    proto.send_close(4001, "mine")
    proto.receive_eof()
    assert proto.close is not None and proto.close.code == 4001


# -- every protocol error and limit ----------------------------------------------------------


@pytest.mark.parametrize(("name", "data", "code"), CORPUS, ids=[c[0] for c in CORPUS])
def test_every_protocol_error_becomes_our_close(name: str, data: bytes, code: int) -> None:
    proto = Protocol(NO_RATE)
    for i in range(len(data)):  # byte by byte: no split changes the outcome
        proto.receive_data(data[i : i + 1], 0.0)
    assert proto.failure is not None and proto.failure.code == code
    proto.send_close(1000)
    assert close_of(proto).code == code


LIMIT_CASES = [
    (
        "message size",
        Limits(max_message_size=10, max_frame_rate=0),
        masked_frame(TEXT, b"x" * 11),
        1009,
    ),
    (
        "fragments",
        Limits(max_fragments=2, max_frame_rate=0),
        b"".join(masked_frame(t, b"x", fin=False) for t in (TEXT, CONT, CONT)),
        1008,
    ),
    ("frame rate", Limits(max_frame_rate=1, frame_burst=3), masked_frame(PING, b"") * 4, 1008),
    (
        "declared length",
        Limits(max_message_size=1000, max_frame_rate=0),
        header_only(BINARY, 1001),
        1009,
    ),
]


@pytest.mark.parametrize(
    ("name", "limits", "data", "code"), LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES]
)
def test_every_limit_fails_with_its_code(name: str, limits: Limits, data: bytes, code: int) -> None:
    proto = Protocol(limits)
    proto.receive_data(data, 0.0)
    assert proto.failure is not None and proto.failure.code == code


def test_the_inflate_budget_and_the_room() -> None:
    limits = Limits(max_frame_rate=0, max_inflate_rate=1000, max_message_size=100_000)
    proto = Protocol(limits, DeflateParams())
    z = zlib.compressobj(wbits=-15)
    wire = b""
    for _ in range(2):
        body = z.compress(b"\x00" * 90_000) + z.flush(zlib.Z_SYNC_FLUSH)
        wire += masked_frame(BINARY, body[:-4], rsv=4)
    proto.receive_data(wire, 0.0)
    assert proto.events_received() == [bytes(90_000)]  # the burst (100 kB) takes one
    assert proto.failure is not None and proto.failure.code == 1008  # not two at once
    # The room: the parse pauses once inflated messages fill what the queue has left.
    proto = Protocol(Limits(max_frame_rate=0), DeflateParams(client_no_context_takeover=True))
    wire = b""
    for _ in range(3):
        z = zlib.compressobj(wbits=-15)
        body = z.compress(b"y" * 1000) + z.flush(zlib.Z_SYNC_FLUSH)
        wire += masked_frame(BINARY, body[:-4], rsv=4)
    proto.receive_data(wire, 0.0, room=1500)
    assert len(proto.events_received()) == 2 and proto.paused
    proto.receive_data(b"", 0.0, room=10_000)
    assert proto.events_received() == [b"y" * 1000] and not proto.paused


# -- pings and keepalive ---------------------------------------------------------------------


def test_a_pong_answers_its_ping_and_every_earlier_one() -> None:
    proto = Protocol(NO_RATE)
    first, second, third = Waiter(), Waiter(), Waiter()
    frames = [
        proto.send_ping(b"1", first),
        proto.send_ping(b"2", second),
        proto.send_ping(b"3", third),
    ]
    assert [e.payload for e in server_frames(frames) if isinstance(e, Ping)] == [b"1", b"2", b"3"]
    with pytest.raises(ValueError, match="already in flight"):
        proto.send_ping(b"2", Waiter())
    with pytest.raises(ValueError, match="125 bytes"):
        proto.send_ping(b"x" * 126, Waiter())
    proto.receive_data(masked_frame(PONG, b"2"), 0.0)
    assert (first.is_set, second.is_set, third.is_set) == (True, True, False)
    assert not proto.unanswered(b"2", second)
    assert proto.unanswered(b"3", third)  # given up (cancelled): the payload is free
    proto.send_ping(b"3", Waiter())
    proto.receive_data(masked_frame(PONG, b"unsolicited"), 0.0)  # a heartbeat: nothing


def test_keepalive_pings_and_a_pong_moves_the_clock() -> None:
    proto = Protocol(NO_RATE)
    assert proto.keepalive_due == math.inf
    proto.start_keepalive(100.0)
    assert proto.keepalive_due == 120.0
    assert proto.keepalive(120.0)
    (ping,) = server_frames(proto.data_to_send())
    assert isinstance(ping, Ping)
    assert proto.keepalive_due == 130.0  # the pong's deadline
    proto.receive_data(masked_frame(PONG, ping.payload), 121.0)
    assert proto.keepalive_due == 140.0  # interval after the ping
    assert proto.keepalive(140.0)
    proto.data_to_send()
    assert not proto.keepalive(150.0)  # unanswered: the peer is gone
    assert proto.keepalive_failed and proto.keepalive_due == math.inf
    event = close_of(proto)
    assert (event.code, event.reason) == (1011, "keepalive ping timeout")


def test_no_keepalive_when_disabled_or_closing() -> None:
    proto = Protocol(Limits(ping_interval=0))
    proto.start_keepalive(0.0)
    assert proto.keepalive_due == math.inf
    proto = Protocol(NO_RATE)
    proto.start_keepalive(0.0)
    proto.send_close(1000)
    proto.data_to_send()
    assert proto.keepalive(20.0) and proto.data_to_send() == []


# -- random byte splits ----------------------------------------------------------------------

FRAME = st.one_of(
    st.builds(lambda t: ("text", t), st.text(max_size=40)),
    st.builds(lambda b: ("binary", b), st.binary(max_size=300)),
    st.builds(lambda b: ("ping", b), st.binary(max_size=20)),
    st.builds(lambda b: ("pong", b), st.binary(max_size=20)),
    st.builds(lambda t: ("fragmented", t), st.text(min_size=2, max_size=40)),
)


def encode(kind: str, value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    if kind == "fragmented":
        cut = len(data) // 2
        return (
            masked_frame(TEXT, data[:cut], fin=False)
            + masked_frame(PING, b"i")
            + masked_frame(CONT, data[cut:])
        )
    opcode = {"text": TEXT, "binary": BINARY, "ping": PING, "pong": PONG}[kind]
    return masked_frame(opcode, data)


@settings(max_examples=150, deadline=None)
@given(
    frames=st.lists(FRAME, max_size=12),
    close=st.booleans(),
    cuts=st.lists(st.integers(min_value=1, max_value=50), max_size=40),
)
def test_any_split_of_the_bytes_gives_the_same_messages_and_replies(
    frames: list[tuple[str, str | bytes]], close: bool, cuts: list[int]
) -> None:
    wire = b"".join(encode(kind, value) for kind, value in frames)
    if close:
        wire += masked_frame(CLOSE, struct.pack("!H", 1000))
    whole = Protocol(NO_RATE)
    whole.receive_data(wire, 0.0)
    split = Protocol(NO_RATE)
    messages: list[str | bytes] = []
    out: list[bytes] = []
    pos = 0
    for cut in [*cuts, len(wire)]:
        split.receive_data(wire[pos : pos + cut], 0.0)
        messages += split.events_received()
        out += split.data_to_send()
        pos += cut
    expected = [value for kind, value in frames if kind in ("text", "binary", "fragmented")]
    assert messages == whole.events_received() == expected
    assert b"".join(out) == b"".join(whole.data_to_send())
    pongs = [e.payload for e in server_frames(out) if isinstance(e, Pong)]
    pings = [
        bytes(value) if isinstance(value, bytes) else b"i"
        for kind, value in frames
        if kind in ("ping", "fragmented")
    ]
    assert pongs == pings
    assert split.state is (CLOSING if close else OPEN)
    assert split.receiving is (not close)
