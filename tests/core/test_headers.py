"""gateway.core.headers: the packed header block a session keeps."""

from __future__ import annotations

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
