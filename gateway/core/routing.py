"""Path templates (``/chat/{room}``) and the router that maps a request path to a mount.

A template is a sequence of segments; ``{name}`` matches exactly one non-empty segment and
captures it percent-decoded.  Literal templates are looked up in a dict; templated ones are
tried in order of specificity (more literal segments first), so a lookup stays cheap however
many mounts there are.  Two templates *overlap* when some path would match both: that is a
configuration error, caught at load time, so at run time a path has at most one owner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import unquote

T = TypeVar("T")

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# RFC 3986 §3.3 pchar, minus "{}" which only templates use.
_LITERAL = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%]+")


@dataclass(frozen=True)
class Template:
    """A parsed path template: each segment is a literal or ``None`` for a parameter."""

    source: str
    segments: tuple[str | None, ...]
    params: tuple[str, ...]

    @classmethod
    def parse(cls, source: str) -> Template:
        """Parse ``/a/{b}/c``; ``ValueError`` says what is wrong with a bad template."""
        if not source.startswith("/"):
            raise ValueError("must start with '/'")
        if source != "/" and source.endswith("/"):
            raise ValueError("must not end with '/'")
        segments: list[str | None] = []
        params: list[str] = []
        for raw in source[1:].split("/") if source != "/" else []:
            if not raw:
                raise ValueError("empty path segment")
            m = _PARAM.fullmatch(raw)
            if m:
                if m.group(1) in params:
                    raise ValueError(f"parameter {{{m.group(1)}}} appears twice")
                params.append(m.group(1))
                segments.append(None)
            elif _LITERAL.fullmatch(raw) and raw not in (".", ".."):
                segments.append(unquote(raw))
            else:
                raise ValueError(f"invalid segment {raw!r} (use {{name}} for a parameter)")
        return cls(source, tuple(segments), tuple(params))

    @property
    def is_literal(self) -> bool:
        return not self.params

    def overlaps(self, other: Template) -> bool:
        """Whether some request path would match both templates."""
        if len(self.segments) != len(other.segments):
            return False
        return all(
            a is None or b is None or a == b
            for a, b in zip(self.segments, other.segments, strict=True)
        )

    def match(self, parts: list[str]) -> dict[str, str] | None:
        """Match decoded path segments; return the parameters or ``None``."""
        if len(parts) != len(self.segments):
            return None
        values: list[str] = []
        for want, got in zip(self.segments, parts, strict=True):
            if want is None:
                if not got:
                    return None
                values.append(got)
            elif want != got:
                return None
        return dict(zip(self.params, values, strict=True))


@dataclass(frozen=True)
class Match(Generic[T]):
    target: T
    template: Template
    params: dict[str, str]


class Router(Generic[T]):
    """Maps request paths to targets (mounts). Build once at start-up; lookups are pure."""

    def __init__(self, routes: list[tuple[Template, T]]) -> None:
        for i, (a, _) in enumerate(routes):
            for b, _ in routes[:i]:
                if a.overlaps(b):
                    raise ValueError(f"path {a.source!r} overlaps {b.source!r}")
        self._exact = {t.source: (t, target) for t, target in routes if t.is_literal}
        # Most literal segments first: among non-overlapping templates the order only matters
        # for speed, but a stable, documented order keeps behaviour predictable.
        templated = [(t, target) for t, target in routes if not t.is_literal]
        templated.sort(key=lambda r: -sum(s is not None for s in r[0].segments))
        self._templated = templated

    def match(self, path: str) -> Match[T] | None:
        """The route for a raw request path (``/chat/caf%C3%A9``), or ``None``."""
        exact = self._exact.get(path)
        if exact is not None:
            return Match(exact[1], exact[0], {})
        if not self._templated or not path.startswith("/"):
            return None
        # Split before decoding, so an encoded "/" (%2F) stays inside its segment.
        try:
            parts = [unquote(p, errors="strict") for p in path[1:].split("/")]
        except UnicodeDecodeError:
            return None
        for template, target in self._templated:
            params = template.match(parts)
            if params is not None:
                return Match(target, template, params)
        return None


# RFC 3986 §2.3 unreserved characters: percent-encoding them changes nothing, so a path is
# compared with them decoded (as nginx's ``location`` and RFC 3986 §6.2.2.2 do).
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_SLASHES = re.compile(r"/{2,}")


def normalize_path(path: str) -> str:
    """The form a request path is matched in against ``[[proxy.routes]]`` prefixes.

    Percent-encoded unreserved characters are decoded (``/%61pi`` -> ``/api``), other escapes
    kept with uppercase hex (``%2f`` -> ``%2F``: an encoded slash is not a separator); runs of
    slashes merged (``//api`` -> ``/api``, nginx's ``merge_slashes``); ``.`` and ``..``
    segments removed (RFC 3986 §5.2.4; never above the root).  So a client cannot pick
    another route than the one its path means to the site behind."""

    def unescape(m: re.Match[str]) -> str:
        char = chr(int(m.group(1), 16))
        return char if char in _UNRESERVED else "%" + m.group(1).upper()

    if "%" in path:
        path = _PCT.sub(unescape, path)
    if "//" in path:
        path = _SLASHES.sub("/", path)
    if "/." not in path:
        return path
    out: list[str] = []
    segments = path.split("/")
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == ".":
            if last:
                out.append("")
        elif segment == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/".join(out) or "/"
