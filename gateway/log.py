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

Two formats (``--log-format`` / ``[log] format``), the same fields in both: ``text`` (the
default, for a terminal: ``time level logger: [mount session] message key=value ...``) and
``json`` (one JSON object per line: ``ts`` in UTC with milliseconds, ``level``, ``logger``,
``event`` and the structured fields).  Structured fields travel as ``extra=`` on the log call
(:data:`FIELDS` names them); the JSON side is python-json-logger's formatter, which serialises
a stdlib record's extras as they are, so no call site needs a second logging API.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# The structured fields, in the order the text format writes them.  Values a client or an
# upstream controls (reason, path, origin, user, upstream text) are passed through safe().
FIELDS = (
    "remote",
    "user",
    "method",
    "path",
    "status",
    "bytes",
    "upstream",
    "origin",
    "code",
    "reason",
    "duration_ms",
    "messages_in",
    "messages_out",
    "bytes_in",
    "bytes_out",
    "dropped",
)
# Rendered as the text format's prefix: ``[worker N pid P] [mount session]``.
_PREFIX_FIELDS = ("worker", "mount", "session")


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
    """Adds ``mount`` and ``session`` to every record (the text format shows them as a
    ``[mount session-id]`` prefix, the JSON format as fields), merged with the call's own
    ``extra=``."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def session_log(mount: str, session_id: str) -> SessionLog:
    return SessionLog(logging.getLogger("gateway.session"), {"mount": mount, "session": session_id})


def _text_value(value: object) -> str:
    kind = type(value)
    if kind is int or kind is float:
        return str(value)  # a number needs neither quotes nor escapes
    text = value if isinstance(value, str) else str(value)
    # (Three substring tests in C: a generator over the characters cost more than the rest
    # of the line, and a session writes one of these per field.)
    if text and " " not in text and "=" not in text and '"' not in text:
        return escape_unprintable(text)
    # safe() doubled every backslash, so an escaped quote cannot be confused with one.
    return '"' + escape_unprintable(text.replace('"', '\\"')) + '"'


class OneLineFormatter(logging.Formatter):
    """A formatter whose message is always one line: whatever non-printable character a
    message still holds (a field someone forgot to pass through :func:`safe`) is escaped.  A
    traceback keeps its own line breaks, with every other unprintable character escaped.

    The structured fields (:data:`FIELDS`) follow the message as ``key=value`` (quoted when
    empty or holding a space, ``=`` or ``"``); ``worker``, ``mount`` and ``session`` come
    first, as a ``[worker N pid P] [mount session]`` prefix."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = escape_unprintable(record.message)
        fields = record.__dict__
        pairs = []
        if fields.get("session") is not None:
            message = f"[{fields.get('mount')} {fields['session']}] {message}"
        elif fields.get("mount") is not None:
            pairs.append(f"mount={_text_value(fields['mount'])}")
        if "worker" in fields:
            message = f"[worker {fields['worker']} pid {record.process}] {message}"
        get = fields.get
        for name in FIELDS:  # (a plain loop: a generator here cost a tenth of a line)
            value = get(name)
            if value is not None:
                pairs.append(f"{name}={_text_value(value)}")
        record.message = " ".join((message, *pairs)) if pairs else message
        return super().formatMessage(record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """As :class:`logging.Formatter`'s, formatted once a second: ``strftime`` was a fifth
        of a line's cost (the format has no sub-second part)."""
        if datefmt is None:  # logging's default format: milliseconds, nothing to share
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached = self._time_cache
        if cached is None or cached[0] != second or datefmt != cached[1]:
            cached = self._time_cache = (second, datefmt, super().formatTime(record, datefmt))
        return cached[2]

    _time_cache: tuple[int, str | None, str] | None = None

    def formatException(self, ei: Any) -> str:
        return "\n".join(
            escape_unprintable(line) for line in super().formatException(ei).split("\n")
        )


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line: ``ts`` (UTC, milliseconds), ``level``, ``logger``,
    ``event``, then every structured field the record carries (``extra=``), ``worker`` and
    ``pid`` in a worker, ``exc_info`` for a traceback.  JSON escapes every control
    character and, with ``ensure_ascii``, every non-ASCII one, so a line is always one line."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger", "message": "event"},
            json_ensure_ascii=True,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        created = datetime.fromtimestamp(record.created, tz=UTC)
        log_data["ts"] = created.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        super().add_fields(log_data, record, message_dict)
        log_data["event"] = escape_unprintable(str(log_data.get("event", "")))
        for name in [k for k, v in log_data.items() if v is None]:
            del log_data[name]  # a field not known for this line is left out
        if "worker" in log_data:
            log_data["pid"] = record.process


def parse_level(text: str) -> str:
    """``--log-level`` / ``[log] level`` in any case: ``"debug"`` -> ``"DEBUG"``; raises
    ValueError for anything else (``"warn"`` is taken as ``WARNING``)."""
    level = text.strip().upper()
    level = "WARNING" if level == "WARN" else level
    if level not in LEVELS:
        raise ValueError(f"expected one of {', '.join(LEVELS)} (any case), got {text!r}")
    return level


def configure(level: str = "INFO", format: LogFormat = "text") -> None:
    """Log to stderr (``format`` ``text``: ``time level logger: message fields``; ``json``:
    one object a line); ``gateway.server`` stays at INFO."""
    level = parse_level(level)
    handler = logging.StreamHandler(sys.stderr)
    if format == "json":
        handler.setFormatter(JsonLineFormatter())
    else:
        handler.setFormatter(
            OneLineFormatter(
                "%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"
            )
        )
    # Neither format writes the caller's file and line, the thread or the multiprocessing
    # name: not collecting them makes each record ~20% cheaper (logging walks the stack for
    # the caller otherwise; its source documents setting ``_srcfile`` to None to skip it).
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Lifecycle lines (listening on…, draining, stopped) stay visible at any level: tools and
    # people read the bound address from them.
    logging.getLogger("gateway.server").setLevel(min(logging.getLevelName(level), logging.INFO))


class Limited:
    """Rate-limited log lines, one :class:`RateLimit` per kind (``"access"``, ``"refused"``,
    ...): a flood of one kind never silences another.  :meth:`log` writes the line if its
    kind allows, with ``dropped=N`` when lines of that kind were dropped since the last."""

    def __init__(self, logger: logging.Logger, limits: dict[str, RateLimit]) -> None:
        self.logger = logger
        self.limits = limits

    def log(self, kind: str, level: int, msg: str, *args: object, **fields: object) -> bool:
        limit = self.limits.get(kind)
        if limit is None:
            limit = self.limits[kind] = RateLimit()
        dropped = limit.allow()
        if dropped is None:
            return False
        if dropped:
            fields["dropped"] = dropped
        self.logger.log(level, msg, *args, extra=fields)
        return True
