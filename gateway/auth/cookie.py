"""The default authenticator: the HMAC-signed session cookie.

The cookie's format, signing and verification are pure and live in
:mod:`gateway.core.cookies`; this is the authenticator a mount runs, reading the cookie from the
handshake's ``Cookie`` headers (RFC 6265 §5.4: several fields, several pairs each).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.api import UpgradeRequest
from gateway.core import cookies


class CookieAuthenticator:
    """Verifies the signed session cookie: its principal, or ``None`` (no cookie, a bad
    signature, an expired or future timestamp: the mount's mode decides what "nobody" gets)."""

    def __init__(
        self,
        ring: cookies.KeyRing,
        cookie_name: str,
        max_age: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ring = ring
        self.cookie_name = cookie_name
        self.max_age = max_age
        self.clock = clock

    def __call__(self, request: UpgradeRequest) -> cookies.Principal | None:
        values = [v for n, v in request.headers if n == "cookie"]
        value = cookies.cookie_value(values, self.cookie_name)
        if value is None:
            return None
        result = cookies.verify(self.ring, value, self.clock(), self.max_age)
        return None if isinstance(result, cookies.CookieRejected) else result
