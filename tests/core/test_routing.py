"""Path templates and the router: parsing, matching, overlap detection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.routing import Router, Template, normalize_path


@pytest.mark.parametrize(
    ("source", "segments", "params"),
    [
        ("/", (), ()),
        ("/echo", ("echo",), ()),
        ("/chat/{room}", ("chat", None), ("room",)),
        ("/a/{x}/b/{y}", ("a", None, "b", None), ("x", "y")),
        ("/caf%C3%A9", ("café",), ()),
    ],
)
def test_parse(source: str, segments: tuple[str | None, ...], params: tuple[str, ...]) -> None:
    t = Template.parse(source)
    assert (t.segments, t.params) == (segments, params)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("echo", "must start with '/'"),
        ("/echo/", "must not end with '/'"),
        ("/a//b", "empty path segment"),
        ("/{x}/{x}", "appears twice"),
        ("/a/{1x}", "invalid segment"),
        ("/a/{x", "invalid segment"),
        ("/a b", "invalid segment"),
        ("/../x", "invalid segment"),
    ],
)
def test_parse_errors(source: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Template.parse(source)


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("/chat/{room}", "/chat/lobby", True),
        ("/chat/{room}", "/chat/{name}", True),
        ("/echo", "/echo", True),
        ("/{a}/x", "/y/{b}", True),
        ("/chat/{room}", "/chat", False),
        ("/chat/{room}", "/chat/{room}/x", False),
        ("/foo", "/bar", False),
    ],
)
def test_overlap(a: str, b: str, overlap: bool) -> None:
    assert Template.parse(a).overlaps(Template.parse(b)) is overlap
    assert Template.parse(b).overlaps(Template.parse(a)) is overlap


def router() -> Router[str]:
    return Router(
        [
            (Template.parse("/echo"), "echo"),
            (Template.parse("/chat/{room}"), "chat"),
            (Template.parse("/u/{user}/inbox"), "inbox"),
        ]
    )


@pytest.mark.parametrize(
    ("path", "target", "params"),
    [
        ("/echo", "echo", {}),
        ("/chat/lobby", "chat", {"room": "lobby"}),
        ("/chat/caf%C3%A9", "chat", {"room": "café"}),
        ("/chat/a%2Fb", "chat", {"room": "a/b"}),  # an encoded slash stays in its segment
        ("/u/ada/inbox", "inbox", {"user": "ada"}),
    ],
)
def test_match(path: str, target: str, params: dict[str, str]) -> None:
    match = router().match(path)
    assert match is not None
    assert (match.target, match.params) == (target, params)


@pytest.mark.parametrize(
    "path",
    ["/", "/echo/", "/ECHO", "/chat", "/chat/", "/chat/a/b", "/u//inbox", "/chat/%FF", "echo"],
)
def test_no_match(path: str) -> None:
    assert router().match(path) is None


def test_overlapping_routes_are_refused() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        Router([(Template.parse("/chat/{room}"), 1), (Template.parse("/chat/lobby"), 2)])


# --------------------------------------------------------------------------- normalize_path


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("/api/x", "/api/x"),
        ("/%61pi/x", "/api/x"),
        ("/%41%7a%30%2D%2e%5F%7E", "/Az0-._~"),
        ("/a%2fb", "/a%2Fb"),  # reserved: kept (an encoded slash is no separator), hex uppercased
        ("/a%20b", "/a%20b"),
        ("/caf%C3%A9", "/caf%C3%A9"),
        ("/a%zz", "/a%zz"),
        ("//api/x", "/api/x"),
        ("/a///b//", "/a/b/"),
        ("/a/./b", "/a/b"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/a/../../b", "/b"),
        ("/..", "/"),
        ("/%2e%2E/api", "/api"),
        ("/.hidden/x", "/.hidden/x"),
        ("/a..b/", "/a..b/"),
        ("/", "/"),
    ],
)
def test_normalize_path(path: str, normal: str) -> None:
    assert normalize_path(path) == normal


_PATH_CHARS = st.sampled_from(["/", ".", "..", "a", "%2e", "%2E", "%61", "%2f", "%", "//", "~"])


@given(st.lists(_PATH_CHARS, max_size=12).map(lambda parts: "/" + "".join(parts)))
def test_normalize_path_stays_absolute_without_empty_or_dot_segments(path: str) -> None:
    # (Not idempotent for a stray "%": "/%%61a" decodes once to "/%aa", as the site would.)
    normal = normalize_path(path)
    assert normal.startswith("/")
    assert "//" not in normal
    assert "/./" not in normal + "/" and "/../" not in normal + "/"
