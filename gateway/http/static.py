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
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from urllib.parse import unquote

import trio

__all__ = [
    "FileMeta",
    "StaticCache",
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
    body: bytes | None = None  # the whole file, when the cache holds it
    size: int = 0  # the Content-Length of a 200 (the file's size at the stat)


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
    return _decide(path, meta, headers, None, method, request_headers)


def _decide(
    path: Path,
    meta: FileMeta,
    headers: list[tuple[bytes, bytes]],
    body: bytes | None,
    method: bytes,
    request_headers: Sequence[tuple[bytes, bytes]],
) -> StaticFile:
    """200 or 304 for a found file (RFC 9110 §13.2.2)."""
    # If-None-Match is a list field: repeated lines combine with "," (RFC 9110 §5.3).
    inm = [v for k, v in request_headers if k == b"if-none-match"]
    ims = [v for k, v in request_headers if k == b"if-modified-since"]
    if_none_match = b", ".join(inm).decode("latin-1") if inm else None
    # §13.1.3: more than one If-Modified-Since member makes the field invalid → ignored.
    if_modified_since = ims[0].decode("latin-1") if len(ims) == 1 else None
    if (inm or ims) and not_modified(meta, etag_for(meta), if_none_match, if_modified_since):
        kept = [(k, v) for k, v in headers if k in _HEADERS_ON_304]
        return StaticFile(path=path, status=304, headers=kept, send_body=False)
    return StaticFile(
        path=path,
        status=200,
        headers=headers,
        send_body=method != b"HEAD",
        body=body,
        size=meta.size,
    )


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


# --------------------------------------------------------------------------- trio: the cache

SMALL_FILE = 64 * 1024  # files up to this size are kept in memory, whole
CACHE_ENTRIES = 1024  # paths remembered (found or not), least recently used dropped first
CACHE_BYTES = 32 * 1024 * 1024  # file bytes kept in memory at most
REVALIDATE = 1.0  # seconds an answer is trusted before the file is looked at again


@dataclass
class _Entry:
    found: tuple[Path, FileMeta] | None  # None: not found (404, or the proxy's fallback)
    identity: tuple[int, int, int, int] | None  # (device, inode, size, mtime_ns)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes | None = None  # the bytes, for a file up to SMALL_FILE
    checked: float = 0.0


class StaticCache:
    """What a request path resolved to under ``root``, for ``REVALIDATE`` seconds.

    nginx's ``open_file_cache`` with ``open_file_cache_valid 1s``, plus the bytes of small
    files: a hit costs no thread hop and no system call.  Once an entry is older than
    ``REVALIDATE`` the next request looks again (:func:`resolve` and ``stat`` in a worker
    thread, so a symlink swapped or a file deleted is seen within a second) and re-reads the
    file only if its device, inode, size or mtime changed.  Bounded: ``CACHE_ENTRIES`` paths
    (a client inventing paths only evicts), ``CACHE_BYTES`` of file bytes.
    """

    def __init__(
        self,
        root: Path,
        index_file: str,
        *,
        entries: int = CACHE_ENTRIES,
        max_bytes: int = CACHE_BYTES,
        small_file: int = SMALL_FILE,
        revalidate: float = REVALIDATE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self.index_file = index_file
        self.max_entries = entries
        self.max_bytes = max_bytes
        self.small_file = small_file
        self.revalidate = revalidate
        self.clock = clock
        self.entries: OrderedDict[str, _Entry] = OrderedDict()
        self.bytes = 0
        self.lookups = 0  # thread hops made (tests and the benchmark's curiosity)

    async def open(
        self, url_path: str, method: bytes, request_headers: Sequence[tuple[bytes, bytes]]
    ) -> StaticFile | None:
        """As :func:`open_static`, from the cache when it is fresh; ``body`` is set for a
        small file."""
        entry = self.entries.get(url_path)
        now = self.clock()
        if entry is None or now - entry.checked >= self.revalidate:
            self.lookups += 1
            entry = await trio.to_thread.run_sync(
                _load, self.root, url_path, self.index_file, self.small_file, entry
            )
            entry.checked = now
            self._store(url_path, entry)
        else:
            self.entries.move_to_end(url_path)
        if entry.found is None:
            return None
        path, meta = entry.found
        return _decide(path, meta, entry.headers, entry.body, method, request_headers)

    def _store(self, key: str, entry: _Entry) -> None:
        old = self.entries.pop(key, None)
        if old is not None and old.body is not None:
            self.bytes -= len(old.body)
        if entry.body is not None and self.bytes + len(entry.body) > self.max_bytes:
            entry.body = None  # no room: served from disk, still cached as a lookup
        self.entries[key] = entry
        if entry.body is not None:
            self.bytes += len(entry.body)
        while len(self.entries) > self.max_entries:
            _, dropped = self.entries.popitem(last=False)
            if dropped.body is not None:
                self.bytes -= len(dropped.body)


def _load(
    root: Path, url_path: str, index_file: str, small_file: int, previous: _Entry | None
) -> _Entry:
    """Worker-thread half of :meth:`StaticCache.open`: resolve, stat, and read a small file
    unless ``previous`` already holds these very bytes."""
    path = resolve(root, url_path, index_file)
    if path is None:
        return _Entry(None, None)
    try:
        st = os.stat(path)
    except OSError:
        return _Entry(None, None)
    if not stat.S_ISREG(st.st_mode):
        return _Entry(None, None)
    identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    meta = FileMeta(size=st.st_size, mtime=st.st_mtime)
    if previous is not None and previous.identity == identity and previous.found is not None:
        return _Entry((path, meta), identity, previous.headers, previous.body)
    headers = conditional_headers(meta, guess_content_type(path))
    body = None
    if st.st_size <= small_file:
        try:
            with open(path, "rb") as f:
                data = f.read(st.st_size + 1)
        except OSError:
            return _Entry(None, None)
        # Changed while being read: serve it from disk this time (the checks there apply).
        body = data if len(data) == st.st_size else None
    return _Entry((path, meta), identity, headers, body)


async def send_file(fd: int, path: Path, length: int) -> int:
    """Send ``length`` bytes of ``path`` on the non-blocking socket ``fd`` with
    ``os.sendfile`` (no copy through Python), each call in a worker thread (a file not in the
    page cache blocks on the disk) and trio's wait when the socket is full.  Returns the bytes
    sent: fewer than ``length`` if the file shrank (the caller must then cut the connection).
    """
    file = await trio.to_thread.run_sync(os.open, path, os.O_RDONLY)
    try:
        offset = 0
        while offset < length:
            sent = await trio.to_thread.run_sync(_sendfile_some, fd, file, offset, length - offset)
            if sent == 0:
                return offset  # the file ended early
            if sent < 0:
                await trio.lowlevel.wait_writable(fd)
                continue
            offset += sent
        return offset
    finally:
        os.close(file)


def _sendfile_some(out: int, file: int, offset: int, count: int) -> int:
    """One ``sendfile`` (at most 16 MiB): bytes sent, 0 at the file's end, -1 when the socket
    has no room.  Never waits for the socket, so a cancelled request does not wait on it."""
    try:
        return os.sendfile(out, file, offset, min(count, 16 * 1024 * 1024))
    except BlockingIOError:
        return -1
