"""Fixtures for the proxy's unit tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import trio

from gateway.core.upstream import Upstream
from gateway.proxy.client import UpstreamConnection

UP = Upstream("127.0.0.1", 9)


@pytest.fixture
def pair() -> Iterator[tuple[UpstreamConnection, socket.socket]]:
    """An :class:`UpstreamConnection` and the raw (blocking, bounded) socket playing the
    upstream."""
    ours, theirs = socket.socketpair()
    theirs.settimeout(5.0)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    yield UpstreamConnection(stream, UP, read_timeout=5.0), theirs
    theirs.close()
    ours.close()
