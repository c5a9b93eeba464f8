"""Logging set-up: one line per event, session ids on every line a session writes.

Values that come from clients (paths, header values, reasons) go through :func:`safe` before
they reach a log line, so a client cannot forge log lines with CR/LF or terminal escapes.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

_ESCAPES = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F)}


def safe(value: object, limit: int = 200) -> str:
    """``repr``-free escaping of control characters, cut to ``limit`` characters."""
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    return text.translate(_ESCAPES)


class SessionLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every message with ``[mount session-id]``."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        return f"[{extra.get('mount')} {extra.get('session')}] {msg}", kwargs


def session_log(mount: str, session_id: str) -> SessionLog:
    return SessionLog(logging.getLogger("gateway.session"), {"mount": mount, "session": session_id})


def configure(level: str = "INFO") -> None:
    """Log to stderr as ``time level logger message``; ``gateway.server`` stays at INFO."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Lifecycle lines (listening on…, draining, stopped) stay visible at any level: tools and
    # people read the bound address from them.
    logging.getLogger("gateway.server").setLevel(min(logging.getLevelName(level), logging.INFO))
