"""Who is connecting: run a mount's authenticator at the handshake.

A mount says ``auth = "none" | "optional" | "required" | "upstream"``.  Its authenticator is
the signed cookie (:class:`gateway.auth.cookie.CookieAuthenticator`, the default), the legacy
site (``upstream``: :class:`gateway.auth.upstream.UpstreamAuthenticator`, nginx's
``auth_request``) or any callable named by ``authenticator = "module:callable"``: it receives
the :class:`UpgradeRequest` and returns a principal (any object; it reaches the plugin as
``session.principal``), ``None`` for "nobody", or a :class:`Reject` to answer with; it may be
``async`` (e.g. to ask another service).  ``required`` and ``upstream`` turn "nobody" into 401;
``optional`` lets it through with ``principal = None``.  A mode other than ``none`` without an
authenticator refuses (fails closed) unless ``optional``.

An authenticator keeps no per-request state on itself: one instance serves every concurrent
handshake of its mount.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from gateway.api import UpgradeRequest
from gateway.core.decisions import Reject

Authenticator = Callable[[UpgradeRequest], Any]

UNAUTHORIZED = Reject(401, "authentication required")


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
