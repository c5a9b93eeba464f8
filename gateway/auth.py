"""Who is connecting: run a mount's authenticator at the handshake.

A mount says ``auth = "none" | "optional" | "required" | "upstream"``.  Its authenticator is
the signed cookie (:class:`CookieAuthenticator`, the default) or any callable named by
``authenticator = "module:callable"``: it receives the :class:`UpgradeRequest` and returns a
principal (any object; it reaches the plugin as ``session.principal``), ``None`` for "nobody",
or a :class:`Reject` to answer with; it may be ``async`` (e.g. to ask another service).
``required`` turns "nobody" into 401; ``optional`` lets it through with ``principal = None``.
``upstream`` asks the legacy site (:mod:`gateway.auth_upstream`) and treats "nobody" as 401.
A mode other than ``none`` without an authenticator refuses (fails closed) unless ``optional``.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any

from gateway.api import UpgradeRequest
from gateway.core import cookies
from gateway.core.decisions import Reject

Authenticator = Callable[[UpgradeRequest], Any]

UNAUTHORIZED = Reject(401, "authentication required")


class CookieAuthenticator:
    """Verifies the HMAC-signed session cookie (see :mod:`gateway.core.cookies`)."""

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
        self.last_rejection: str | None = None  # for the handshake log line

    def __call__(self, request: UpgradeRequest) -> cookies.Principal | None:
        values = [v for n, v in request.headers if n == "cookie"]
        value = cookies.cookie_value(values, self.cookie_name)
        if value is None:
            return None
        result = cookies.verify(self.ring, value, self.clock(), self.max_age)
        if isinstance(result, cookies.CookieRejected):
            self.last_rejection = result.reason
            return None
        return result


async def authenticate(
    mode: str, authenticator: Authenticator | None, request: UpgradeRequest
) -> Any:
    """The principal for ``request`` under ``mode``, or the :class:`Reject` to send."""
    if mode == "none":
        return None
    if authenticator is None:
        return None if mode == "optional" else UNAUTHORIZED
    result = authenticator(request)
    if inspect.isawaitable(result):
        result = await result
    if isinstance(result, Reject):
        return result
    if result is None and mode != "optional":
        return UNAUTHORIZED
    return result


def principal_user(principal: object) -> str | None:
    """The user name a principal stands for (the key of per-user delivery,
    :meth:`gateway.mount.Mount.send_to_user`): a string principal is the name, an object's
    ``user`` attribute (the signed cookie's :class:`~gateway.core.cookies.Principal`), a
    mapping's ``"user"``; ``None`` for nobody or a principal without a name."""
    if isinstance(principal, str):
        return principal or None
    user = (
        principal.get("user")
        if isinstance(principal, Mapping)
        else getattr(principal, "user", None)
    )
    return user if isinstance(user, str) and user else None
