"""The client-frame parser: a corpus of malformed frames with their close codes, limits checked
before buffering, fragment and rate limits, bounded inflate, and byte-at-a-time feeding."""

from __future__ import annotations

import codecs
import os
import struct
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ws.parser import (
    LARGE_FRAME,
    Close,
    FrameParser,
    Inflater,
    ParserLimits,
    Ping,
    Pong,
    ProtocolError,
    _unmask_int,
    unmask,
)
from tests.support.ws_frames import CORPUS, header_only, masked_frame

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
NO_RATE = ParserLimits(max_frame_rate=0)


def parse(
    data: bytes, limits: ParserLimits = NO_RATE, inflater: Inflater | None = None
) -> list[object]:
    parser = FrameParser(limits, inflater)
    parser.feed(data)
    return list(parser.events())


def close_code(data: bytes, limits: ParserLimits = NO_RATE) -> int:
    with pytest.raises(ProtocolError) as info:
        parse(data, limits)
    return info.value.code


def test_messages_and_control_frames() -> None:
    data = (
        masked_frame(TEXT, "héllo".encode())
        + masked_frame(BINARY, b"\x00\x01")
        + masked_frame(PING, b"p")
        + masked_frame(PONG, b"q")
        + masked_frame(TEXT, b"")
        + masked_frame(CLOSE, struct.pack("!H", 4000) + b"bye")
    )
    assert parse(data) == ["héllo", b"\x00\x01", Ping(b"p"), Pong(b"q"), "", Close(4000, "bye")]


def test_empty_close_is_1005() -> None:
    assert parse(masked_frame(CLOSE, b"")) == [Close(1005, "")]


def test_nothing_is_parsed_after_close() -> None:
    data = masked_frame(CLOSE, b"") + masked_frame(TEXT, b"after")
    assert parse(data) == [Close(1005, "")]


def test_fragments_with_interleaved_control_frames() -> None:
    data = (
        masked_frame(TEXT, b"a", fin=False)
        + masked_frame(PING, b"1")
        + masked_frame(CONT, "é".encode()[:1], fin=False)  # a character split across frames
        + masked_frame(CONT, "é".encode()[1:] + b"z", fin=True)
    )
    assert parse(data) == [Ping(b"1"), "aéz"]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
def test_any_split_of_the_bytes_gives_the_same_events(chunk: int) -> None:
    data = (
        masked_frame(TEXT, b"x" * 200)
        + masked_frame(BINARY, b"y" * 70000)
        + masked_frame(TEXT, b"ab", fin=False)
        + masked_frame(CONT, b"cd")
    )
    parser = FrameParser(NO_RATE)
    events: list[object] = []
    for i in range(0, len(data), chunk):
        parser.feed(data[i : i + chunk])
        events.extend(parser.events())
    assert events == ["x" * 200, b"y" * 70000, "abcd"]


@pytest.mark.parametrize(("name", "data", "code"), CORPUS, ids=[c[0] for c in CORPUS])
def test_malformed_frame_corpus(name: str, data: bytes, code: int) -> None:
    assert close_code(data) == code


@pytest.mark.parametrize(("name", "data", "code"), CORPUS, ids=[c[0] for c in CORPUS])
def test_malformed_frames_fail_the_same_byte_by_byte(name: str, data: bytes, code: int) -> None:
    parser = FrameParser(NO_RATE)

    def feed_bytewise() -> None:
        for i in range(len(data)):
            parser.feed(data[i : i + 1])

    with pytest.raises(ProtocolError) as info:
        feed_bytewise()
    assert info.value.code == code


def test_declared_length_is_refused_before_the_payload_arrives() -> None:
    parser = FrameParser(ParserLimits(max_message_size=1000, max_frame_rate=0))
    parser.feed(header_only(BINARY, 1000)[:6])  # exactly the limit: waits for the payload
    assert parser.events() == []
    with pytest.raises(ProtocolError) as info:
        FrameParser(ParserLimits(max_message_size=1000, max_frame_rate=0)).feed(
            header_only(BINARY, 1001)
        )
    assert info.value.code == 1009


def test_fragments_count_towards_the_message_limit() -> None:
    limits = ParserLimits(max_message_size=100, max_frame_rate=0)
    ok = masked_frame(BINARY, b"x" * 60, fin=False) + masked_frame(CONT, b"x" * 40)
    assert parse(ok, limits) == [b"x" * 100]
    too_big = masked_frame(BINARY, b"x" * 60, fin=False) + header_only(CONT, 41)
    assert close_code(too_big, limits) == 1009


def test_too_many_fragments_is_1008() -> None:
    limits = ParserLimits(max_fragments=10, max_frame_rate=0)
    frames = masked_frame(BINARY, b"", fin=False) + masked_frame(CONT, b"", fin=False) * 8
    assert parse(frames + masked_frame(CONT, b"."), limits) == [b"."]
    assert close_code(frames + masked_frame(CONT, b"", fin=False) * 2, limits) == 1008


def test_a_flood_of_empty_fragments_is_stopped_at_the_default_limit() -> None:
    flood = masked_frame(BINARY, b"", fin=False) + masked_frame(CONT, b"", fin=False) * 100_000
    assert close_code(flood) == 1008


def test_frame_rate_bucket() -> None:
    limits = ParserLimits(max_frame_rate=10, frame_burst=20)
    parser = FrameParser(limits)
    frame = masked_frame(BINARY, b"x")
    parser.feed(frame * 20, now=100.0)  # the burst
    assert len(parser.events()) == 20
    parser.feed(frame * 10, now=101.0)  # refilled at 10 per second
    assert len(parser.events()) == 10
    with pytest.raises(ProtocolError) as info:
        parser.feed(frame * 2, now=101.05)
    assert info.value.code == 1008


@pytest.mark.parametrize("function", [unmask, _unmask_int], ids=["used", "pure-python"])
def test_unmask_matches_a_byte_loop(function: Callable[[bytes, bytes], bytes]) -> None:
    mask = b"\x01\x02\x03\x04"
    for n in (0, 1, 3, 4, 5, 125, 1000):
        payload = os.urandom(n)
        assert function(payload, mask) == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def deflate(data: bytes) -> bytes:
    z = zlib.compressobj(wbits=-15)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def test_compressed_messages_inflate() -> None:
    data = masked_frame(TEXT, deflate("héllo".encode()), rsv=4)
    assert parse(data, inflater=Inflater()) == ["héllo"]


def test_compressed_fragments() -> None:
    body = deflate(b"z" * 5000)
    data = masked_frame(BINARY, body[:10], rsv=4, fin=False) + masked_frame(CONT, body[10:])
    assert parse(data, inflater=Inflater()) == [b"z" * 5000]


def test_a_compression_bomb_stops_at_the_limit() -> None:
    bomb = deflate(b"\x00" * (10 * 1024 * 1024))  # ~10 KB that inflates to 10 MiB
    assert len(bomb) < 20_000
    limits = ParserLimits(max_message_size=1024 * 1024, max_frame_rate=0)
    with pytest.raises(ProtocolError) as info:
        parse(masked_frame(BINARY, bomb, rsv=4), limits, Inflater())
    assert info.value.code == 1009


def test_invalid_compressed_data_is_1007() -> None:
    data = masked_frame(BINARY, b"\xff\xff\xff\xff", rsv=4)
    with pytest.raises(ProtocolError) as info:
        parse(data, inflater=Inflater())
    assert info.value.code == 1007


def test_rsv1_on_a_continuation_is_1002_even_with_compression() -> None:
    data = masked_frame(BINARY, deflate(b"a"), rsv=4, fin=False) + masked_frame(CONT, b"", rsv=4)
    with pytest.raises(ProtocolError) as info:
        parse(data, inflater=Inflater())
    assert info.value.code == 1002


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_events_or_a_protocol_error(data: bytes) -> None:
    parser = FrameParser(ParserLimits(max_message_size=1000))
    code = None
    try:
        parser.feed(data)
    except ProtocolError as exc:
        code = exc.code
    assert code in (None, 1002, 1007, 1008, 1009)
    for event in parser.events():
        assert isinstance(event, str | bytes | Ping | Pong | Close)


# -- compression budgets (issue 9, item 4) -------------------------------------------------


def compressed_stream(messages: list[bytes]) -> bytes:
    """Client frames for ``messages``, compressed with context takeover (one deflate stream)."""
    z = zlib.compressobj(wbits=-15)
    frames = b""
    for message in messages:
        body = z.compress(message) + z.flush(zlib.Z_SYNC_FLUSH)
        frames += masked_frame(BINARY, body[:-4], rsv=4)
    return frames


def test_the_inflate_budget_allows_its_burst_then_its_rate() -> None:
    inflater = Inflater(rate=1000, burst=5000)
    z = zlib.compressobj(wbits=-15)

    def message(n: int) -> bytes:
        return (z.compress(b"a" * n) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]

    assert inflater.inflate(message(4000), 100_000, now=1.0) == b"a" * 4000
    assert inflater.inflate(message(1000), 100_000, now=1.0) == b"a" * 1000  # burst spent
    assert inflater.inflate(message(2000), 100_000, now=3.0) == b"a" * 2000  # 2 s refilled
    with pytest.raises(ProtocolError) as info:
        inflater.inflate(message(10), 100_000, now=3.0)
    assert (info.value.code, info.value.reason) == (1008, "inflating too fast")


def test_a_bomb_past_the_budget_is_1008_before_it_inflates_whole() -> None:
    """zlib is asked for no more than the tokens left: the bomb's 10 MiB are never produced
    (1008, the budget), where the same bomb with a larger budget is 1009 (the size)."""
    bomb = deflate(b"\x00" * (10 * 1024 * 1024))
    with pytest.raises(ProtocolError) as info:
        Inflater(rate=1000, burst=5000).inflate(bomb, 1024 * 1024)
    assert info.value.code == 1008
    with pytest.raises(ProtocolError) as info:
        Inflater(rate=10**9, burst=10**9).inflate(bomb, 1024 * 1024)
    assert info.value.code == 1009


def test_no_budget_when_the_rate_is_zero() -> None:
    inflater = Inflater()  # rate 0: the message limit only
    for _ in range(20):
        assert inflater.inflate(deflate(b"\x00" * 100_000), 1024 * 1024) == b"\x00" * 100_000


def test_the_parser_pauses_once_inflated_messages_fill_its_room() -> None:
    messages = [bytes([i]) * 1000 for i in range(10)]
    parser = FrameParser(NO_RATE, Inflater())
    parser.room = 2500
    parser.feed(compressed_stream(messages) + masked_frame(PING, b"p"))
    assert parser.events() == messages[:3]  # 3000 bytes >= 2500: the rest stays compressed
    assert parser.paused
    parser.feed(b"")
    assert parser.events() == messages[3:6]
    parser.room = 10_000
    parser.feed(b"")
    assert parser.events() == [*messages[6:], Ping(b"p")]
    assert not parser.paused


def test_uncompressed_messages_never_pause_the_parser() -> None:
    parser = FrameParser(NO_RATE, Inflater())
    parser.room = 10
    data = b"".join(masked_frame(BINARY, b"x" * 100) for _ in range(5))
    parser.feed(data)
    assert parser.events() == [b"x" * 100] * 5
    assert not parser.paused


# -- invalid UTF-8 fails as soon as it arrives (RFC 6455 §8.1; issue 13) -------------------


def first_invalid(payload: bytes) -> int | None:
    """The index of the byte after which ``payload`` can no longer be a prefix of valid
    UTF-8, or ``None`` if every prefix can be."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    for i in range(len(payload)):
        try:
            decoder.decode(payload[i : i + 1], False)
        except UnicodeDecodeError:
            return i
    return None


def feed_until_error(parser: FrameParser, pieces: list[bytes]) -> int | None:
    """Feed ``pieces`` one by one: the index of the piece that raised, or ``None``."""
    for index, piece in enumerate(pieces):
        try:
            parser.feed(piece)
        except ProtocolError as exc:
            return index if exc.code == 1007 else -exc.code
    return None


def test_invalid_text_in_a_frame_still_arriving_fails_at_once() -> None:
    frame = masked_frame(TEXT, b"valid start \xff and a long rest " + b"x" * 1000)
    invalid_at = len(frame) - 1000 - len(" and a long rest ") - 1  # the \xff
    parser = FrameParser(NO_RATE)
    parser.feed(frame[:invalid_at])  # all valid so far
    with pytest.raises(ProtocolError) as info:
        parser.feed(frame[invalid_at : invalid_at + 1])  # the frame is far from complete
    assert info.value.code == 1007


def test_a_character_split_across_pieces_and_fragments_is_valid() -> None:
    text = "é€😀".encode()
    frames = masked_frame(TEXT, text[:1], fin=False) + masked_frame(CONT, text[1:], fin=True)
    parser = FrameParser(NO_RATE)
    for i in range(len(frames)):
        parser.feed(frames[i : i + 1])
    assert parser.events() == ["é€😀"]


def test_a_fragment_that_turns_the_text_invalid_fails_before_the_message_ends() -> None:
    parser = FrameParser(NO_RATE)
    parser.feed(masked_frame(TEXT, b"ok \xe2\x82", fin=False))  # "€" begun
    with pytest.raises(ProtocolError) as info:
        parser.feed(masked_frame(CONT, b"X", fin=False))  # not its last byte: invalid now
    assert info.value.code == 1007


def test_compressed_text_is_checked_fragment_by_fragment() -> None:
    z = zlib.compressobj(wbits=-15)
    first = z.compress(b"fine, then \xff") + z.flush(zlib.Z_SYNC_FLUSH)
    parser = FrameParser(NO_RATE, Inflater())
    with pytest.raises(ProtocolError) as info:
        # The first fragment of a compressed text message; its end is never sent.
        parser.feed(masked_frame(TEXT, first, fin=False, rsv=4))
    assert info.value.code == 1007


def test_compressed_fragments_with_a_character_across_them_are_valid() -> None:
    z = zlib.compressobj(wbits=-15)
    text = "naïve 😀 text".encode() * 20
    body = z.compress(text) + z.flush(zlib.Z_SYNC_FLUSH)
    body = body[:-4]
    cut = len(body) // 3
    frames = masked_frame(TEXT, body[:cut], fin=False, rsv=4) + masked_frame(
        CONT, body[cut:], fin=True
    )
    assert parse(frames, inflater=Inflater()) == [text.decode()]


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(max_size=60),
    garbage=st.binary(min_size=1, max_size=4),
    at=st.integers(min_value=0),
    fragment_sizes=st.lists(st.integers(min_value=0, max_value=40), max_size=4),
    cuts=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=30),
)
def test_text_fails_at_the_piece_carrying_the_first_invalid_byte(
    text: str, garbage: bytes, at: int, fragment_sizes: list[int], cuts: list[int]
) -> None:
    """Whatever the fragmenting and however the bytes are split, a text message fails with
    1007 at the very feed that brings its first invalid byte, and valid text never fails."""
    valid = text.encode()
    at %= len(valid) + 1
    payload = valid[:at] + garbage + valid[at:]
    bad = first_invalid(payload)
    # Fragment the payload, then the wire bytes, remembering where each payload byte lands.
    wire = b""
    where: list[int] = []  # wire offset of each payload byte
    rest, opcode = payload, TEXT
    for size in [*fragment_sizes, len(payload)]:
        part, rest = rest[:size], rest[size:]
        final = not rest
        head = len(masked_frame(opcode, part, fin=final)) - len(part)
        where.extend(len(wire) + head + i for i in range(len(part)))
        wire += masked_frame(opcode, part, fin=final)
        opcode = CONT
        if final:
            break
    pieces, offsets, pos = [], [], 0
    for cut in [*cuts, len(wire)]:
        if pos >= len(wire):
            break
        pieces.append(wire[pos : pos + cut])
        offsets.append(pos)
        pos += cut
    if pos < len(wire):
        pieces.append(wire[pos:])
        offsets.append(pos)
    parser = FrameParser(NO_RATE)
    failed = feed_until_error(parser, pieces)
    if bad is None:
        try:
            expected_text = payload.decode()
        except UnicodeDecodeError:
            # Cut short at the very end: invalid only once the message ends.
            assert failed == len(pieces) - 1
        else:
            assert failed is None
            assert parser.events() == [expected_text]
    else:
        byte_at = where[bad]
        expected = max(i for i, offset in enumerate(offsets) if offset <= byte_at)
        assert failed == expected


# -- large frames received in place (read_buffer / feed_into) -------------------------------

LARGE = ParserLimits(max_message_size=4 * LARGE_FRAME, max_frame_rate=0)


def feed_like_a_socket(parser: FrameParser, data: bytes, sizes: list[int]) -> None:
    """Feed ``data`` as the shell does: into the parser's large-frame buffer when it offers
    one, else as bytes; ``sizes`` are the reads' sizes, cycled."""
    pos = i = 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        i += 1
        into = parser.read_buffer()
        if into is None:
            parser.feed(data[pos : pos + size])
            pos += size
        else:
            piece = data[pos : pos + min(size, len(into))]
            into[: len(piece)] = piece
            into.release()
            parser.feed_into(len(piece))
            pos += len(piece)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=200_000), min_size=1, max_size=8))
def test_large_frames_read_in_place_give_the_same_events(sizes: list[int]) -> None:
    big = os.urandom(LARGE_FRAME + 1234)
    data = (
        masked_frame(TEXT, b"before")
        + masked_frame(BINARY, big)
        + masked_frame(PING, b"p")
        + masked_frame(BINARY, big[: LARGE_FRAME // 2], fin=False)
        + masked_frame(CONT, big)  # a large continuation of a binary message
        + masked_frame(TEXT, "é".encode() * LARGE_FRAME)  # large text: the UTF-8 path
        + masked_frame(BINARY, b"after")
    )
    expected = ["before", big, Ping(b"p"), big[: LARGE_FRAME // 2] + big, "é" * LARGE_FRAME]
    expected.append(b"after")
    for socket_like in (True, False):
        parser = FrameParser(LARGE)
        events: list[object] = []
        if socket_like:
            feed_like_a_socket(parser, data, sizes)
        else:
            for start in range(0, len(data), sizes[0]):
                parser.feed(data[start : start + sizes[0]])
        events += parser.events()
        assert events == expected


def test_a_large_frame_offers_its_buffer_only_once_its_header_is_checked() -> None:
    parser = FrameParser(LARGE)
    frame = masked_frame(BINARY, os.urandom(2 * LARGE_FRAME))
    parser.feed(frame[:5])  # the header is not whole yet
    assert parser.read_buffer() is None
    parser.feed(frame[5:100])
    into = parser.read_buffer()
    assert into is not None and len(into) == len(frame) - 100
    into.release()
    # Over the limit: refused on the declared length, and no buffer is offered.
    parser = FrameParser(LARGE)
    with pytest.raises(ProtocolError) as info:
        parser.feed(header_only(BINARY, 4 * LARGE_FRAME + 1))
    assert info.value.code == 1009
    assert parser.read_buffer() is None


def test_large_text_and_compressed_frames_are_not_read_in_place() -> None:
    parser = FrameParser(LARGE)
    parser.feed(masked_frame(TEXT, b"x" * (2 * LARGE_FRAME))[:1000])
    assert parser.read_buffer() is None  # text: checked as UTF-8 as it arrives
    parser = FrameParser(LARGE, Inflater(15, False))
    parser.feed(masked_frame(BINARY, b"x" * (2 * LARGE_FRAME), rsv=4)[:1000])
    assert parser.read_buffer() is None  # compressed: inflated with its budget
