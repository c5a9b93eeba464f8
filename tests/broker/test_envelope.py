"""The broker's envelope: round trips, and every way an untrusted one is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.broker import envelope
from gateway.broker.envelope import HEADER_BYTES, Invalid, decode, encode

NODE = bytes(range(16))


def test_text_stays_text_and_binary_stays_binary() -> None:
    text = decode(encode(NODE, "héllo ✓"), 100)
    assert text.message == "héllo ✓"
    assert isinstance(text.message, str)
    assert text.node == NODE
    binary = decode(encode(NODE, b"\x00\xff hello"), 100)
    assert binary.message == b"\x00\xff hello"
    assert isinstance(binary.message, bytes)


def test_empty_messages_round_trip() -> None:
    assert decode(encode(NODE, ""), 0).message == ""
    assert decode(encode(NODE, b""), 0).message == b""


def test_node_ids_are_random_and_sized() -> None:
    assert len(envelope.new_node_id()) == envelope.NODE_ID_BYTES
    assert envelope.new_node_id() != envelope.new_node_id()
    with pytest.raises(ValueError, match="16 bytes"):
        encode(b"short", "x")


def test_the_bound_is_the_payload_in_bytes() -> None:
    data = encode(NODE, "é" * 5)  # 10 bytes of UTF-8
    assert decode(data, 10).message == "é" * 5
    with pytest.raises(Invalid) as info:
        decode(data, 9)
    assert info.value.reason == "too_large"
    assert envelope.payload_size("é" * 5) == 10
    assert envelope.payload_size(b"abc") == 3


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "short"),
        (b"\x01\x01" + NODE[:15], "short"),
        (b"\x02\x01" + NODE + b"x", "version"),
        (b"\x00\x01" + NODE + b"x", "version"),
        (b"\x01\x03" + NODE + b"x", "kind"),
        (b"\x01\x00" + NODE + b"x", "kind"),
        (b"\x01\x01" + NODE + b"\xff\xfe", "utf8"),
        (b"\x01\x01" + NODE + b"\xed\xa0\x80", "utf8"),  # an encoded surrogate
        (b"\x01\x01" + NODE + b"\xc3", "utf8"),  # a cut sequence
        (b"\x01\x02" + NODE + b"x" * 11, "too_large"),
    ],
)
def test_untrusted_input_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(Invalid) as info:
        decode(data, 10)
    assert info.value.reason == reason
    assert reason in envelope.REASONS


def test_a_lone_surrogate_cannot_be_sent() -> None:
    with pytest.raises(UnicodeEncodeError):
        encode(NODE, "\ud800")


@given(st.one_of(st.text(), st.binary()), st.binary(min_size=16, max_size=16))
def test_any_message_round_trips(message: str | bytes, node: bytes) -> None:
    data = encode(node, message)
    assert len(data) == HEADER_BYTES + envelope.payload_size(message)
    decoded = decode(data, envelope.payload_size(message))
    assert decoded.message == message
    assert type(decoded.message) is type(message)
    assert decoded.node == node


@given(st.binary(max_size=64))
def test_any_bytes_decode_or_are_refused(data: bytes) -> None:
    reason = None
    try:
        result = decode(data, 32)
    except Invalid as exc:
        reason = exc.reason
    if reason is not None:
        assert reason in envelope.REASONS
    else:
        assert len(data) - HEADER_BYTES <= 32
        assert isinstance(result.message, str | bytes)
