"""Reading HTTP header fields the way RFC 9110 says they combine.

h11 hands us ``(name, value)`` pairs with lowercase byte names; these helpers answer the few
questions the front door asks (one value? a token list?) without ever raising on odd input.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Headers = Sequence[tuple[bytes, bytes]]


def _triples(headers: Headers) -> list[tuple[bytes, bytes, bytes]] | None:
    """h11's own list of ``(raw name, name, value)`` behind its ``Headers``, or ``None``.

    h11's ``Headers`` is a ``Sequence`` whose iteration goes through ``__getitem__`` one
    index at a time (``collections.abc``'s generic ``__iter__``): ~10 Python calls per field,
    about 5% of a WebSocket handshake's CPU when every helper here iterated it.  Reading the
    list it wraps is one C-level loop.  (Private to h11, so any other sequence, or an h11
    that renamed it, takes the generic path.)"""
    items = getattr(headers, "_full_items", None)
    return items if type(items) is list else None


def pairs(headers: Headers) -> list[tuple[bytes, bytes]]:
    """The ``(name, value)`` pairs as a list (from h11's own list when it is one)."""
    triples = _triples(headers)
    if triples is not None:
        return [(n, v) for _, n, v in triples]
    return list(headers)


def values(headers: Headers, name: bytes) -> list[bytes]:
    """All values of the field ``name`` (lowercase), in order."""
    triples = _triples(headers)
    if triples is not None:
        return [v for _, n, v in triples if n == name]
    return [v for n, v in headers if n == name]


def first(headers: Headers, name: bytes) -> bytes | None:
    """The first value of ``name``, or ``None``; callers that forbid repeats check ``values``."""
    triples = _triples(headers)
    if triples is not None:
        for _, n, v in triples:
            if n == name:
                return v
        return None
    for n, v in headers:
        if n == name:
            return v
    return None


def tokens(headers: Headers, name: bytes) -> list[bytes]:
    """The comma-separated list elements of every ``name`` field, lowercased (RFC 9110 §5.6.1).

    Used for ``Connection``, ``Upgrade`` and ``Sec-WebSocket-Version``, whose tokens are
    case-insensitive; empty elements (``a, ,b``) are dropped as §5.6.1 requires.
    """
    out: list[bytes] = []
    for value in values(headers, name):
        out.extend(t for t in (part.strip().lower() for part in value.split(b",")) if t)
    return out


def text(value: bytes) -> str:
    """Decode a header value for use in Python (latin-1 cannot fail; h11 validated the bytes)."""
    return value.decode("latin-1")


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """``b"/a/b?x=1"`` -> ``(b"/a/b", b"x=1")``; the fragment never reaches a server."""
    path, _, query = target.partition(b"?")
    return path, query


def encode(pairs: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Header pairs from str to the bytes h11 wants."""
    return [(n.encode("ascii"), v.encode("latin-1")) for n, v in pairs]


def pack(headers: Headers) -> bytes:
    """The pairs as one ``name:value\\n`` block: a long-lived session keeps one bytes object
    instead of a tuple, a tuple and two bytes per field (~1 KiB less per idle WebSocket).
    Lossless for what h11 accepts: names have no ``:`` and values no CR or LF (RFC 9110 §5)."""
    triples = _triples(headers)
    if triples is not None:
        return b"\n".join([n + b":" + v for _, n, v in triples])
    return b"\n".join([n + b":" + v for n, v in headers])


def unpack(block: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """The pairs :func:`pack` stored, in order."""
    if not block:
        return ()
    return tuple(_pair(line) for line in block.split(b"\n"))


def _pair(line: bytes) -> tuple[bytes, bytes]:
    name, _, value = line.partition(b":")
    return name, value
