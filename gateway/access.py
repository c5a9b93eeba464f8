"""The access log (``[log] access = true``) and the lines every refused handshake writes.

Both are lines a client can trigger at will, so both are rate-limited per kind
(:class:`gateway.log.Limited`): access lines at ``log.access_rate`` a second, refusals
(``refused``, ``destroyed``, ``deadline``) at :data:`REFUSAL_BURST` per
:data:`REFUSAL_INTERVAL` seconds each.  A line written after some were dropped says how many
(``dropped=N``).

With the access log off, :class:`gateway.app.Snapshot` holds ``access = None`` and a request
pays one check for it.  With it on, connections accepted from then on use
:class:`CountingConnection`, an ``h11.Connection`` that remembers the status and the bytes
of what it sent, so static files, health probes, fixed answers and proxied responses are
all measured at the one place their bytes pass.
"""

from __future__ import annotations

import logging
from typing import overload

import h11
from h11._events import Event

from gateway.log import Limited, RateLimit, safe

log = logging.getLogger("gateway.access")
refusals_log = logging.getLogger("gateway.http")

REFUSAL_BURST = 20
REFUSAL_INTERVAL = 10.0

# Refused handshakes, destroyed sockets and handshake deadlines: on whether or not the access
# log is, each kind limited on its own.
refusals = Limited(
    refusals_log,
    {
        kind: RateLimit(REFUSAL_BURST, REFUSAL_INTERVAL)
        for kind in ("refused", "destroyed", "deadline")
    },
)


class CountingConnection(h11.Connection):
    """An ``h11.Connection`` that keeps the status of the last response it sent and the
    bytes it sent since :meth:`reset` (head, body and framing)."""

    status: int = 0
    sent: int = 0

    def reset(self) -> None:
        self.status = 0
        self.sent = 0

    @overload
    def send(self, event: h11.ConnectionClosed) -> None: ...
    @overload
    def send(
        self,
        event: h11.Request | h11.InformationalResponse | h11.Response | h11.Data | h11.EndOfMessage,
    ) -> bytes: ...
    @overload
    def send(self, event: Event) -> bytes | None: ...
    def send(self, event: Event) -> bytes | None:
        data = super().send(event)
        if isinstance(event, h11.Response | h11.InformationalResponse):
            self.status = event.status_code
        if data:
            self.sent += len(data)
        return data


class AccessLog:
    """One line per HTTP request: method, path, status, bytes, duration, the client and, for
    a proxied request, the upstream."""

    def __init__(self, rate: float) -> None:
        self.lines = Limited(log, {"access": RateLimit(max(1, int(rate)), 1.0)})

    def request(
        self,
        *,
        method: bytes,
        target: bytes,
        status: int | None,
        sent: int | None,
        duration: float,
        remote: str,
        upstream: str | None = None,
    ) -> None:
        self.lines.log(
            "access",
            logging.INFO,
            "request",
            remote=remote,
            method=safe(method.decode("ascii", "replace"), 20),
            path=safe(target.decode("ascii", "replace")),
            status=status or None,  # None: no response was sent (the client left, a cut)
            bytes=sent,
            upstream=upstream,
            duration_ms=round(duration * 1000, 3),
        )


def refused(
    *,
    remote: str,
    target: bytes,
    status: int,
    detail: str,
    origin: str | None = None,
    mount: str | None = None,
    user: str | None = None,
) -> None:
    """A handshake answered with ``status`` instead of 101 (the Origin received with it for
    a 403)."""
    refusals.log(
        "refused",
        logging.INFO,
        "refused handshake: %s",
        detail,
        remote=remote,
        path=safe(target.decode("ascii", "replace")),
        status=status,
        origin=safe(origin) if origin is not None and status == 403 else None,
        mount=mount,
        user=safe(user) if user is not None else None,
    )
