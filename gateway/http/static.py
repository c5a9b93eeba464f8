"""Static files for the HTTP front door: a pure decision layer and a thin trio layer.

The pure half never raises for hostile input: every doubtful request target is simply "not
found" (``None``), so the caller answers 404 and an attacker learns nothing.  The trio half
(:func:`open_static`, :func:`iter_file`) moves blocking filesystem calls off the event loop.
Method checks (405) belong to the caller.
"""

from __future__ import annotations

import email.utils
import mimetypes
import os
import re
import stat
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from urllib.parse import unquote

import trio

__all__ = [
    "FileMeta",
    "StaticFile",
    "conditional_headers",
    "etag_for",
    "guess_content_type",
    "iter_file",
    "not_modified",
    "open_static",
    "resolve",
]

# Types a browser must get right regardless of what /etc/mime.types says: a wrong type for a
# module script or a stylesheet is refused under nosniff, and .wasm needs it for streaming compile.
_MIME_OVERRIDES = {
    ".html": "text/html",
    ".htm": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".wasm": "application/wasm",
}
_FALLBACK_TYPE = "application/octet-stream"

# RFC 9110 §8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE.  Anything not matching is junk
# and ignored, which can only turn a 304 into a 200, never the reverse.
_ENTITY_TAG = re.compile(r'(W/)?("[\x21\x23-\x7e\x80-\xff]*")')


# --------------------------------------------------------------------------- pure: paths


def resolve(root: Path, url_path: str, index_file: str = "index.html") -> Path | None:
    """Map a raw, still percent-encoded request-target path (no query) to a file in ``root``.

    Decodes exactly once.  ``None`` (never an exception) for: no leading "/", undecodable
    escapes, NUL, backslash, encoded slash, "." / ".." / empty / hidden (dot-prefixed)
    segments, a directory without trailing slash, a missing or non-regular file, or a real
    path (symlinks followed) outside ``root`` or through a hidden name.  A trailing "/" means
    that directory's ``index_file``.  Returns the real (symlink-free) path.
    """
    if not url_path.startswith("/") or "%2f" in url_path.lower():
        # An encoded slash would let one "segment" smuggle a separator past the checks below.
        return None
    try:
        decoded = unquote(url_path, errors="strict")
        decoded.encode("utf-8")  # lone surrogates cannot name a file; refuse before the OS does
    except UnicodeError:
        return None
    if "\x00" in decoded or "\\" in decoded:  # raw or as %00 / %5c: never a POSIX name part
        return None
    segments = decoded[1:].split("/")
    if segments[-1] == "":  # trailing slash (or "/" itself): the directory's index
        segments[-1] = index_file
    if not all(_is_plain_name(s) for s in segments):
        return None
    try:
        real_root = os.path.realpath(root)
        real = os.path.realpath(os.path.join(real_root, *segments))
        # Containment is checked on the real path, so a symlink inside root that points
        # outside is refused while one pointing elsewhere inside root is served.
        if os.path.commonpath([real_root, real]) != real_root:
            return None
        if not all(_is_plain_name(p) for p in Path(os.path.relpath(real, real_root)).parts):
            return None  # e.g. a visible symlink to .env
        if not stat.S_ISREG(os.stat(real).st_mode):
            return None  # directories (no trailing slash: no redirect yet), fifos, devices
    except (OSError, ValueError):
        return None  # missing, ENAMETOOLONG, ELOOP, EACCES ...: all just "not found"
    return Path(real)


def _is_plain_name(segment: str) -> bool:
    """True for a non-empty path segment that is neither special ("." / "..") nor hidden."""
    return segment != "" and not segment.startswith(".")


# --------------------------------------------------------------------------- pure: headers


@dataclass(frozen=True)
class FileMeta:
    """What the headers are derived from: size in bytes and mtime in seconds since the epoch."""

    size: int
    mtime: float


def guess_content_type(path: Path | str) -> str:
    """The media type for ``path`` by extension, without parameters.

    Browser-critical types come from a fixed table; the rest from :mod:`mimetypes`; unknown or
    content-encoded files (``.tar.gz``) fall back to ``application/octet-stream`` because we
    send no Content-Encoding and must not claim a type the bytes do not have.
    """
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix in _MIME_OVERRIDES:
        return _MIME_OVERRIDES[suffix]
    guessed, encoding = mimetypes.guess_type(str(path), strict=False)
    if guessed is None or encoding is not None:
        return _FALLBACK_TYPE
    return guessed


def etag_for(meta: FileMeta) -> str:
    """Weak validator ``W/"<size hex>-<mtime_ns hex>"``.

    Weak (RFC 9110 §8.8.1) because size+mtime does not prove byte identity; it is only ever
    compared weakly (If-None-Match, §13.1.2), so that is all it needs to be.
    """
    mtime_ns = round(meta.mtime * 1_000_000_000)
    return f'W/"{meta.size:x}-{mtime_ns:x}"'


def conditional_headers(meta: FileMeta, content_type: str) -> list[tuple[bytes, bytes]]:
    """Response headers for a 200 of a file with ``meta`` and media type ``content_type``.

    ``text/*`` types get ``; charset=utf-8`` unless a charset is already given.  Includes
    Content-Length, Last-Modified (IMF-fixdate, RFC 9110 §5.6.7), a weak ETag, nosniff, and
    ``Cache-Control: no-cache`` (cache, but revalidate every time: cheap with the 304 path).
    """
    if content_type.startswith("text/") and "charset=" not in content_type.lower():
        content_type += "; charset=utf-8"
    return [
        (b"content-type", content_type.encode("ascii")),
        (b"content-length", str(meta.size).encode("ascii")),
        (b"last-modified", email.utils.formatdate(meta.mtime, usegmt=True).encode("ascii")),
        (b"etag", etag_for(meta).encode("ascii")),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-cache"),
    ]


def not_modified(
    meta: FileMeta, etag: str, if_none_match: str | None, if_modified_since: str | None
) -> bool:
    """True when a GET/HEAD should be answered 304 (RFC 9110 §13.2.2 steps 3 and 4).

    If-None-Match (§13.1.2) wins: ``*`` matches (the file exists), otherwise any listed tag
    that weakly matches ``etag``.  Only without it is If-Modified-Since (§13.1.3) consulted:
    304 when Last-Modified (whole seconds) is not after the given date.  A malformed date is
    ignored, i.e. the full response is sent.
    """
    if if_none_match is not None:
        # §13.1.3: "A recipient MUST ignore If-Modified-Since if the request contains an
        # If-None-Match header field".
        if if_none_match.strip() == "*":
            return True
        ours = _opaque(etag)
        return any(m.group(2) == ours for m in _ENTITY_TAG.finditer(if_none_match))
    if if_modified_since is None:
        return False
    try:
        since = email.utils.parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError, IndexError, OverflowError):
        return False  # §13.1.3: not a valid HTTP-date → ignore the field
    if since.tzinfo is None:  # "-0000" parses naive; HTTP-dates are always GMT
        since = since.replace(tzinfo=UTC)
    # Last-Modified only has one-second resolution, so compare what we actually sent.
    return int(meta.mtime) <= since.timestamp()


def _opaque(tag: str) -> str:
    """The quoted opaque-tag of ``tag``: weak comparison (§8.8.3.2) ignores the ``W/``."""
    return tag[2:] if tag.startswith("W/") else tag


# --------------------------------------------------------------------------- trio


@dataclass
class StaticFile:
    """A decided response: ``status`` + ``headers``, then ``path``'s bytes if ``send_body``."""

    path: Path
    status: int
    headers: list[tuple[bytes, bytes]]
    send_body: bool


# RFC 9110 §15.4.5: a 304 carries the validators and caching fields a 200 would, not the
# representation's Content-Type/Content-Length (there is no content).
_HEADERS_ON_304 = frozenset({b"etag", b"last-modified", b"cache-control"})


async def open_static(
    root: Path,
    url_path: str,
    index_file: str,
    method: bytes,
    request_headers: Sequence[tuple[bytes, bytes]],
) -> StaticFile | None:
    """Resolve ``url_path`` under ``root`` and decide 200 or 304; ``None`` means 404.

    ``method`` is GET or HEAD (the caller answers anything else); header names are lowercase,
    as h11 delivers them.  Blocking filesystem work runs in a worker thread.  ``send_body`` is
    False for HEAD and for 304.
    """
    found = await trio.to_thread.run_sync(_resolve_and_stat, root, url_path, index_file)
    if found is None:
        return None
    path, meta = found
    headers = conditional_headers(meta, guess_content_type(path))
    # If-None-Match is a list field: repeated lines combine with "," (RFC 9110 §5.3).
    inm = [v for k, v in request_headers if k == b"if-none-match"]
    ims = [v for k, v in request_headers if k == b"if-modified-since"]
    if_none_match = b", ".join(inm).decode("latin-1") if inm else None
    # §13.1.3: more than one If-Modified-Since member makes the field invalid → ignored.
    if_modified_since = ims[0].decode("latin-1") if len(ims) == 1 else None
    if not_modified(meta, etag_for(meta), if_none_match, if_modified_since):
        kept = [(k, v) for k, v in headers if k in _HEADERS_ON_304]
        return StaticFile(path=path, status=304, headers=kept, send_body=False)
    return StaticFile(path=path, status=200, headers=headers, send_body=method != b"HEAD")


def _resolve_and_stat(root: Path, url_path: str, index_file: str) -> tuple[Path, FileMeta] | None:
    """Worker-thread half of :func:`open_static`: one thread hop for both blocking steps."""
    path = resolve(root, url_path, index_file)
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None  # vanished since resolve(): still just "not found"
    if not stat.S_ISREG(st.st_mode):
        return None
    return path, FileMeta(size=st.st_size, mtime=st.st_mtime)


async def iter_file(
    path: Path, chunk_size: int = 65536, *, limit: int | None = None
) -> AsyncGenerator[bytes, None]:
    """Yield the bytes of ``path`` in chunks of at most ``chunk_size``, one chunk in memory.

    ``limit`` caps the total: pass the Content-Length sent, so a file that grew since the stat
    cannot overrun it (one that shrank yields fewer bytes; the caller must then abort the
    connection).  Use inside ``contextlib.aclosing`` so an early exit closes the file.
    """
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    remaining = limit
    async with await trio.open_file(path, "rb") as f:
        while remaining is None or remaining > 0:
            want = chunk_size if remaining is None else min(chunk_size, remaining)
            chunk = await f.read(want)
            if not chunk:
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk
