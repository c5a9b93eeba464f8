"""Logging set-up: one line per event, session ids on every line a session writes.

Values that come from clients or upstreams (paths, header values, close reasons, upstream
errors) go through :func:`safe` before they reach a log line, so they cannot forge log lines:
every character that is not printable is escaped, which covers CR/LF and the other C0
controls, DEL, the C1 controls (U+0085 NEL among them), U+2028/U+2029 (line and paragraph
separators, which Unicode-aware readers split lines on), bidi and zero-width format
characters and lone surrogates; a backslash is doubled, so an escape in the log always means
an escaped character.  The formatter :func:`configure` installs escapes whatever is still
unprintable in a message as a second line of defence.

Every line a client can trigger at will is rate-limited (:class:`RateLimit`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape_unprintable(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\x85``, ``\\u2028``).

    :meth:`str.isprintable` is false for Unicode categories Cc, Cf, Cs, Co, Cn, Zl, Zp and Zs
    (except the ASCII space): every control, separator and format character."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def safe(value: object, limit: int = 200) -> str:
    """``value`` as text fit for one log line: cut to ``limit`` characters, backslashes
    doubled, every non-printable character escaped (see the module docstring)."""
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    return escape_unprintable(text)


class RateLimit:
    """At most ``burst`` lines per ``interval`` seconds for one kind of event.

    :meth:`allow` says whether to write the line now: ``None`` (drop it, it is counted), or how
    many were dropped since the last line written (say so in the line).  Wall-clock based
    (``time.monotonic``), so it works in and out of trio and under an autojump clock alike.
    """

    def __init__(
        self,
        burst: int = 5,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._window_start: float | None = None
        self._written = 0
        self.dropped = 0

    def allow(self) -> int | None:
        now = self.clock()
        if self._window_start is None or now - self._window_start >= self.interval:
            self._window_start = now
            self._written = 0
        if self._written >= self.burst:
            self.dropped += 1
            return None
        self._written += 1
        dropped, self.dropped = self.dropped, 0
        return dropped


class SessionLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every message with ``[mount session-id]``."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        return f"[{extra.get('mount')} {extra.get('session')}] {msg}", kwargs


def session_log(mount: str, session_id: str) -> SessionLog:
    return SessionLog(logging.getLogger("gateway.session"), {"mount": mount, "session": session_id})


class OneLineFormatter(logging.Formatter):
    """A formatter whose message is always one line: whatever non-printable character a
    message still holds (a field someone forgot to pass through :func:`safe`) is escaped.  A
    traceback keeps its own line breaks, with every other unprintable character escaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_unprintable(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return "\n".join(
            escape_unprintable(line) for line in super().formatException(ei).split("\n")
        )


def configure(level: str = "INFO") -> None:
    """Log to stderr as ``time level logger message``; ``gateway.server`` stays at INFO."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        OneLineFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Lifecycle lines (listening on…, draining, stopped) stay visible at any level: tools and
    # people read the bound address from them.
    logging.getLogger("gateway.server").setLevel(min(logging.getLevelName(level), logging.INFO))
