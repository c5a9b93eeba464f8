"""permessage-deflate negotiation (RFC 7692 §7) and the compressor, without sockets."""

from __future__ import annotations

import zlib

import pytest

from gateway.ws.deflate import CLIENT_WINDOW_BITS, DeflateParams, Deflater, negotiate
from gateway.ws.parser import FrameParser, Inflater
from tests.support.ws_frames import BINARY, RSV1, masked_frame


@pytest.mark.parametrize(
    ("offers", "response"),
    [
        (("permessage-deflate",), "permessage-deflate"),
        (
            ("permessage-deflate; client_max_window_bits",),
            f"permessage-deflate; client_max_window_bits={CLIENT_WINDOW_BITS}",
        ),
        (
            ("permessage-deflate; client_max_window_bits=10",),
            "permessage-deflate; client_max_window_bits=10",
        ),
        (
            ("permessage-deflate; server_no_context_takeover; client_no_context_takeover",),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (
            ("permessage-deflate; server_max_window_bits=10",),
            "permessage-deflate; server_max_window_bits=10",
        ),
        # The first acceptable offer wins; unacceptable ones are skipped.
        (
            ("permessage-deflate; server_max_window_bits=7, permessage-deflate",),
            "permessage-deflate",
        ),
        (("x-webkit-deflate-frame", "permessage-deflate"), "permessage-deflate"),
        (
            ('permessage-deflate; client_max_window_bits="9"',),
            "permessage-deflate; client_max_window_bits=9",
        ),
    ],
)
def test_accepted_offers(offers: tuple[str, ...], response: str) -> None:
    params = negotiate(offers)
    assert params is not None
    assert params.header() == response


@pytest.mark.parametrize(
    "offer",
    [
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits",  # needs a value
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; unknown_param",
        "",
    ],
)
def test_declined_offers(offer: str) -> None:
    assert negotiate((offer,)) is None


@pytest.mark.parametrize("takeover", [True, False])
def test_deflater_output_inflates_back(takeover: bool) -> None:
    params = DeflateParams(server_no_context_takeover=not takeover)
    deflater = Deflater(params)
    inflater = zlib.decompressobj(-15)
    for text in ["a" * 1000, "héllo " * 100, "a" * 1000]:
        frame = deflater.frame(text)
        assert frame[0] == 0x80 | 0x40 | 0x1  # FIN, RSV1, text
        length = frame[1]
        body = frame[4:] if length == 126 else frame[2:]
        assert inflater.decompress(body + b"\x00\x00\xff\xff").decode() == text
        if not takeover:
            inflater = zlib.decompressobj(-15)


def test_small_messages_are_sent_plain() -> None:
    frame = Deflater(DeflateParams()).frame(b"tiny")
    assert frame == bytes([0x82, 4]) + b"tiny"


def test_compression_actually_shrinks_repetitive_messages() -> None:
    assert len(Deflater(DeflateParams()).frame("x" * 10_000)) < 100


def test_inflater_with_a_small_window_reads_what_a_client_compressed() -> None:
    z = zlib.compressobj(wbits=-CLIENT_WINDOW_BITS)
    body = z.compress(b"abc" * 1000) + z.flush(zlib.Z_SYNC_FLUSH)
    frame = masked_frame(BINARY, body[:-4], rsv=RSV1)
    parser = FrameParser(inflater=Inflater(CLIENT_WINDOW_BITS))
    parser.feed(frame)
    assert parser.events() == [b"abc" * 1000]
