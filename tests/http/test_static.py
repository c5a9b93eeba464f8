"""Static file serving: traversal corpus, MIME types, conditional requests, streaming."""

from __future__ import annotations

import mimetypes
import os
from contextlib import aclosing
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.http.static import (
    FileMeta,
    conditional_headers,
    etag_for,
    guess_content_type,
    iter_file,
    not_modified,
    open_static,
    resolve,
)

# --------------------------------------------------------------------------- fixture tree


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A served root next to an ``outside`` directory holding a secret.

    Layout (under the resolved root)::

        index.html app.js .env .git/config sub/{index.html,page.html} empty/
        "%2e%2e"/x.txt            literal name: what /%252e%252e/ means when decoded exactly once
        "h\ufffdllo.txt"          reached only if bad UTF-8 were decoded with errors=replace
        a name with a backslash, and one with the raw byte 0x80: legal on POSIX, never served
        "héllo wörld.txt"
        link_out -> ../outside/secret.txt    dir_out -> ../outside
        link_in  -> sub/page.html            alias   -> sub        link_env -> .env
    """
    base = tmp_path_factory.mktemp("static").resolve()
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    r = base / "root"
    for rel in [
        "index.html",
        "app.js",
        ".env",
        ".git/config",
        "sub/index.html",
        "sub/page.html",
        "%2e%2e/x.txt",
        "h\ufffdllo.txt",
        "héllo wörld.txt",
    ]:
        (r / rel).parent.mkdir(parents=True, exist_ok=True)
        (r / rel).write_text(rel)
    (r / "empty").mkdir()
    (r / "link_out").symlink_to(outside / "secret.txt")
    (r / "dir_out").symlink_to(outside, target_is_directory=True)
    (r / "link_in").symlink_to("sub/page.html")
    (r / "alias").symlink_to("sub", target_is_directory=True)
    (r / "link_env").symlink_to(".env")
    # Legal POSIX names that must stay unreachable: a backslash (Windows separator) and a
    # non-UTF-8 byte (a lone surrogate under surrogateescape).
    (r / "back\\slash.txt").write_text("x")
    (r / os.fsdecode(b"raw\x80.txt")).write_text("x")
    return r


# (url_path, expected file relative to root, or None for "not found")
TRAVERSAL: list[tuple[str, str | None]] = [
    ("/", "index.html"),
    ("/index.html", "index.html"),
    ("/app.js", "app.js"),
    ("/missing.html", None),
    ("index.html", None),  # no leading slash
    ("", None),
    ("/../outside/secret.txt", None),
    ("/sub/../../outside/secret.txt", None),
    ("/sub/../index.html", None),  # ".." refused even when it would stay inside
    ("/..", None),
    ("/%2e%2e/outside/secret.txt", None),
    ("/%2E%2E/outside/secret.txt", None),
    ("/%2e%2e%2foutside%2fsecret.txt", None),
    ("/..%2foutside%2fsecret.txt", None),
    ("/sub%2fpage.html", None),  # encoded slash refused even when harmless
    ("/sub%2Fpage.html", None),
    ("/%252e%252e/secret.txt", None),  # decoded once: literal "%2e%2e" dir, no secret there
    ("/%252e%252e/x.txt", "%2e%2e/x.txt"),  # ...and that literal dir really is what is used
    ("/..\\outside\\secret.txt", None),
    ("/sub\\page.html", None),
    ("/..%5coutside%5csecret.txt", None),
    ("/sub%5Cpage.html", None),
    ("/back\\slash.txt", None),  # refused even though such a file exists
    ("/back%5cslash.txt", None),
    ("/raw%80.txt", None),  # invalid UTF-8 escape
    ("/raw\udc80.txt", None),  # lone surrogate: would be the byte 0x80 to the OS
    ("/index.html%00", None),
    ("/index.html%00.js", None),
    ("//etc/passwd", None),
    ("/sub//page.html", None),
    ("/./index.html", None),
    ("/sub/./page.html", None),
    ("/%2e/index.html", None),
    ("/.env", None),
    ("/%2eenv", None),
    ("/.git/config", None),
    ("/link_out", None),  # symlink inside root pointing outside
    ("/dir_out/secret.txt", None),
    ("/link_env", None),  # visible symlink to a hidden file
    ("/link_in", "sub/page.html"),  # symlink inside pointing inside
    ("/alias/page.html", "sub/page.html"),
    ("/sub", None),  # directory without trailing slash: no redirect in this version
    ("/sub/", "sub/index.html"),
    ("/empty/", None),  # directory without an index
    ("/index.html/", None),  # a file is not a directory
    ("/h%C3%A9llo%20w%C3%B6rld.txt", "héllo wörld.txt"),
    ("/héllo wörld.txt", "héllo wörld.txt"),
    ("/h%E9llo.txt", None),  # Latin-1 escape is invalid UTF-8
    ("/h%C3%28llo.txt", None),
    ("/" + "a" * 5000, None),  # ENAMETOOLONG must not escape as an exception
    ("/" + "a/" * 3000 + "index.html", None),
    ("/" + "%2e%2e/" * 200 + "etc/passwd", None),
]


@pytest.mark.parametrize(("url_path", "expected"), TRAVERSAL)
def test_resolve_corpus(root: Path, url_path: str, expected: str | None) -> None:
    got = resolve(root, url_path)
    if expected is None:
        assert got is None
    else:
        assert got == (root / expected).resolve()
        assert got.is_file()


def test_resolve_custom_index_file(root: Path) -> None:
    assert resolve(root, "/sub/", "page.html") == root / "sub" / "page.html"
    assert resolve(root, "/", "page.html") is None


_PIECES = [
    "/",
    "..",
    ".",
    "%2e",
    "%2f",
    "%00",
    "%5c",
    "\\",
    "%",
    "%C3",
    "%A9",
    "%25",
    "sub",
    "index.html",
    "link_out",
    "dir_out",
    "alias",
    "page.html",
    "\udc80",
    "é",
]


@given(
    st.one_of(
        st.text(),
        st.lists(st.sampled_from(_PIECES), max_size=12).map("".join),
        st.lists(st.sampled_from(_PIECES), max_size=12).map(lambda xs: "/" + "".join(xs)),
    )
)
def test_resolve_never_raises_and_stays_inside(root: Path, url_path: str) -> None:
    got = resolve(root, url_path)
    if got is not None:
        assert got.is_relative_to(root)
        assert got.is_file()


# --------------------------------------------------------------------------- MIME types


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.js", "text/javascript"),
        ("a.mjs", "text/javascript"),
        ("a.css", "text/css"),
        ("a.html", "text/html"),
        ("A.HTML", "text/html"),
        ("a.svg", "image/svg+xml"),
        ("a.json", "application/json"),
        ("a.wasm", "application/wasm"),
        ("a.png", "image/png"),
        ("a.unknownext", "application/octet-stream"),
        ("noext", "application/octet-stream"),
        ("a.tar.gz", "application/octet-stream"),  # no Content-Encoding is sent
    ],
)
def test_guess_content_type(name: str, expected: str) -> None:
    assert guess_content_type(Path(name)) == expected


def test_guess_content_type_ignores_platform_database(monkeypatch: pytest.MonkeyPatch) -> None:
    def bogus(url: str, strict: bool = True) -> tuple[str | None, str | None]:
        return ("application/x-bogus", None)

    monkeypatch.setattr(mimetypes, "guess_type", bogus)
    for name, expected in [
        ("a.js", "text/javascript"),
        ("a.css", "text/css"),
        ("a.html", "text/html"),
        ("a.svg", "image/svg+xml"),
        ("a.json", "application/json"),
        ("a.wasm", "application/wasm"),
    ]:
        assert guess_content_type(name) == expected
    assert guess_content_type("a.png") == "application/x-bogus"  # others do consult it


@pytest.mark.parametrize(
    ("content_type", "header"),
    [
        ("text/html", b"text/html; charset=utf-8"),
        ("text/javascript", b"text/javascript; charset=utf-8"),
        ("text/plain; charset=iso-8859-1", b"text/plain; charset=iso-8859-1"),
        ("application/json", b"application/json"),
        ("image/png", b"image/png"),
    ],
)
def test_content_type_charset(content_type: str, header: bytes) -> None:
    headers = dict(conditional_headers(FileMeta(size=1, mtime=0.0), content_type))
    assert headers[b"content-type"] == header


def test_conditional_headers_exact() -> None:
    meta = FileMeta(size=255, mtime=784111777.5)
    assert conditional_headers(meta, "image/png") == [
        (b"content-type", b"image/png"),
        (b"content-length", b"255"),
        (b"last-modified", b"Sun, 06 Nov 1994 08:49:37 GMT"),
        (b"etag", b'W/"ff-ae1b981da166f00"'),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-cache"),
    ]
    assert etag_for(FileMeta(size=255, mtime=1.5)) == 'W/"ff-59682f00"'


def test_etag_changes_with_size_and_mtime() -> None:
    base = etag_for(FileMeta(size=10, mtime=100.0))
    assert etag_for(FileMeta(size=11, mtime=100.0)) != base
    assert etag_for(FileMeta(size=10, mtime=100.000001)) != base


# --------------------------------------------------------------------------- conditionals

META = FileMeta(size=10, mtime=784111777.25)  # Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT
TAG = etag_for(META)
OPAQUE = TAG[2:]


@pytest.mark.parametrize(
    ("inm", "ims", "expected"),
    [
        (None, None, False),
        (TAG, None, True),
        (OPAQUE, None, True),  # weak comparison ignores W/
        ('"other"', None, False),
        ('W/"other"', None, False),
        (f'"a", {TAG}, "b"', None, True),
        (f'"a",{OPAQUE}', None, True),
        ('"a", "b"', None, False),
        ("*", None, True),
        (" * ", None, True),
        ("garbage", None, False),
        ("", None, False),
        # If-None-Match takes precedence over If-Modified-Since, in both directions.
        ('"other"', "Sun, 06 Nov 1994 08:49:37 GMT", False),
        (TAG, "Sat, 01 Jan 1994 00:00:00 GMT", True),
        (None, "Sun, 06 Nov 1994 08:49:37 GMT", True),  # equal (sub-second mtime ignored)
        (None, "Mon, 07 Nov 1994 00:00:00 GMT", True),  # later
        (None, "Sun, 06 Nov 1994 08:49:36 GMT", False),  # earlier
        (None, "Sunday, 06-Nov-94 08:49:37 GMT", True),  # obsolete RFC 850 form
        (None, "Sun Nov  6 08:49:37 1994", True),  # asctime form
        (None, "not a date", False),
        (None, "", False),
        (None, "Sun, 99 Nov 1994 08:49:37 GMT", False),
    ],
)
def test_not_modified(inm: str | None, ims: str | None, expected: bool) -> None:
    assert not_modified(META, TAG, inm, ims) is expected


# --------------------------------------------------------------------------- trio layer


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "index.html").write_text("<h1>hi</h1>")
    (tmp_path / "app.js").write_text("x")
    os.utime(tmp_path / "app.js", (784111777, 784111777))
    return tmp_path.resolve()


async def test_open_static_200(site: Path) -> None:
    got = await open_static(site, "/", "index.html", b"GET", [])
    assert got is not None
    assert (got.path, got.status, got.send_body) == (site / "index.html", 200, True)
    headers = dict(got.headers)
    assert headers[b"content-type"] == b"text/html; charset=utf-8"
    assert headers[b"content-length"] == b"11"


async def test_open_static_not_found(site: Path) -> None:
    assert await open_static(site, "/nope.js", "index.html", b"GET", []) is None
    assert await open_static(site, "/../etc/passwd", "index.html", b"GET", []) is None


async def test_open_static_head_has_no_body(site: Path) -> None:
    got = await open_static(site, "/app.js", "index.html", b"HEAD", [])
    assert got is not None
    assert (got.status, got.send_body) == (200, False)
    assert dict(got.headers)[b"content-length"] == b"1"  # HEAD still describes the body


async def test_open_static_etag_match_is_304(site: Path) -> None:
    first = await open_static(site, "/app.js", "index.html", b"GET", [])
    assert first is not None
    tag = dict(first.headers)[b"etag"]
    got = await open_static(site, "/app.js", "index.html", b"GET", [(b"if-none-match", tag)])
    assert got is not None
    assert (got.status, got.send_body) == (304, False)
    assert dict(got.headers) == {
        b"etag": tag,
        b"last-modified": b"Sun, 06 Nov 1994 08:49:37 GMT",
        b"cache-control": b"no-cache",
    }


async def test_open_static_repeated_if_none_match_lines_combine(site: Path) -> None:
    first = await open_static(site, "/app.js", "index.html", b"GET", [])
    assert first is not None
    tag = dict(first.headers)[b"etag"]
    req = [(b"if-none-match", b'"nope"'), (b"if-none-match", tag)]
    got = await open_static(site, "/app.js", "index.html", b"GET", req)
    assert got is not None
    assert got.status == 304


async def test_open_static_etag_mismatch_is_200(site: Path) -> None:
    req = [(b"if-none-match", b'W/"1-2"')]
    got = await open_static(site, "/app.js", "index.html", b"GET", req)
    assert got is not None
    assert (got.status, got.send_body) == (200, True)


@pytest.mark.parametrize(
    ("ims", "status"),
    [
        (b"Sun, 06 Nov 1994 08:49:37 GMT", 304),
        (b"Tue, 01 Jan 2030 00:00:00 GMT", 304),
        (b"Sat, 05 Nov 1994 08:49:37 GMT", 200),
        (b"yesterday-ish", 200),
    ],
)
async def test_open_static_if_modified_since(site: Path, ims: bytes, status: int) -> None:
    req = [(b"if-modified-since", ims)]
    got = await open_static(site, "/app.js", "index.html", b"GET", req)
    assert got is not None
    assert got.status == status
    assert got.send_body is (status == 200)


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("chunk_size", [65536, 10_000, 1])
async def test_iter_file_streams_in_chunks(tmp_path: Path, chunk_size: int) -> None:
    size = 1024 * 1024 if chunk_size > 1 else 3000
    data = os.urandom(size)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    chunks: list[bytes] = []
    async with aclosing(iter_file(path, chunk_size)) as it:
        async for chunk in it:
            chunks.append(chunk)
    assert all(0 < len(c) <= chunk_size for c in chunks)
    assert len(chunks) >= size // chunk_size
    assert b"".join(chunks) == data


async def test_iter_file_limit_caps_output(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789")
    async with aclosing(iter_file(path, 4, limit=7)) as it:
        got = [c async for c in it]
    assert got == [b"0123", b"456"]


async def test_open_static_repeated_if_modified_since_is_ignored(site: Path) -> None:
    # RFC 9110 §13.1.3: more than one member makes the field invalid, so it is ignored.
    date = b"Tue, 01 Jan 2030 00:00:00 GMT"
    req = [(b"if-modified-since", date), (b"if-modified-since", date)]
    got = await open_static(site, "/app.js", "index.html", b"GET", req)
    assert got is not None
    assert got.status == 200
