"""gateway.core.headers: the packed header block a session keeps."""

from __future__ import annotations

import h11
from hypothesis import given
from hypothesis import strategies as st

from gateway.core import headers

# What h11 accepts: token names (lowercase), values without CR/LF/NUL (RFC 9110 §5.5).
NAMES = st.from_regex(rb"\A[a-z0-9!#$%&'*+.^_`|~-]{1,20}\Z")
VALUES = st.binary(max_size=40).filter(lambda v: not set(v) & {0, 10, 13})


@given(st.lists(st.tuples(NAMES, VALUES), max_size=12))
def test_pack_then_unpack_gives_the_pairs_back(pairs: list[tuple[bytes, bytes]]) -> None:
    assert headers.unpack(headers.pack(pairs)) == tuple(pairs)


def test_packing_is_one_bytes_object() -> None:
    block = headers.pack([(b"host", b"a:1"), (b"x-empty", b""), (b"cookie", b"a=b; c=d")])
    assert block == b"host:a:1\nx-empty:\ncookie:a=b; c=d"
    assert headers.unpack(b"") == ()


# Fields h11 checks further (one Host, a numeric Content-Length, a known Transfer-Encoding).
FREE_NAMES = NAMES.filter(lambda n: n not in (b"host", b"content-length", b"transfer-encoding"))


# Values h11 builds a request with: visible characters and obs-text, inner spaces and tabs.
FIELD_VALUES = st.from_regex(
    rb"\A([\x21-\x7e\x80-\xff]([\x20-\x7e\x80-\xff\t]*[\x21-\x7e\x80-\xff])?)?\Z"
)


@given(st.lists(st.tuples(FREE_NAMES, FIELD_VALUES), max_size=12), NAMES)
def test_h11s_headers_read_the_same_as_a_plain_list(
    fields: list[tuple[bytes, bytes]], name: bytes
) -> None:
    """The helpers read h11's own list behind its ``Headers`` (the fast path) and any other
    sequence generically: both give the same answers."""
    request = h11.Request(method="GET", target="/", headers=[(b"host", b"a"), *fields])
    parsed, plain = request.headers, list(request.headers)
    assert headers.pairs(parsed) == headers.pairs(plain) == plain
    for asked in (name, b"host"):
        assert headers.values(parsed, asked) == headers.values(plain, asked)
        assert headers.first(parsed, asked) == headers.first(plain, asked)
        assert headers.tokens(parsed, asked) == headers.tokens(plain, asked)
    assert headers.pack(parsed) == headers.pack(plain)
