"""Helpers for tests that drive a gateway in memory (:mod:`gateway.testing`): wait for
server-side state, and expect a refused handshake."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import trio
from trio_websocket import ConnectionRejected

if TYPE_CHECKING:
    from gateway.testing import TestGateway


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it holds (fails the test with ``TooSlowError`` otherwise).

    For server-side state that changes after the client's view (a close finishes on the
    client before the server has unregistered the connection).  Sleeps rather than spins, so
    it also works under ``autojump_clock``.
    """
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polling state that nobody signals
            await trio.sleep(0.001)


class HandshakeAccepted(AssertionError):
    """:func:`refused` expected a refusal but the handshake succeeded."""


async def refused(
    gw: TestGateway,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    user: str | None = None,
) -> ConnectionRejected:
    """Connect to ``path`` expecting the handshake to be refused; return the rejection.

    ``gw.connect`` raises the :class:`ConnectionRejected` itself (pinned by
    ``test_connect_raises_connection_rejected_itself``); this also unwraps a group holding
    exactly one, and re-raises anything else.
    """
    try:
        async with gw.connect(path, headers=headers, user=user):
            pass
    except ConnectionRejected as exc:
        return exc
    except BaseExceptionGroup as group:
        matched, rest = group.split(ConnectionRejected)
        if matched is None or rest is not None:
            raise
        leaf: BaseException = matched
        while isinstance(leaf, BaseExceptionGroup):
            if len(leaf.exceptions) != 1:
                raise
            leaf = leaf.exceptions[0]
        assert isinstance(leaf, ConnectionRejected)
        return leaf
    raise HandshakeAccepted(f"the handshake for {path} was accepted")
