"""The listening sockets of ``serve --workers N``, bound by the supervisor before any worker.

On Linux every worker gets sockets of its own on the same address, joined with SO_REUSEPORT:
the kernel spreads new connections evenly over them by a hash of the connection.  One shared
socket would leave the spread to whichever worker wakes first, and on Linux that is the same
worker nearly every time while the load is light: long-lived WebSocket sessions would pile up
on one process (docs/design.md, "Workers").  Elsewhere (SO_REUSEPORT there does not balance,
or is missing) all workers share one set of sockets.

The supervisor binds them all, so port 0 is resolved once (the first worker's socket picks the
port, the others join it) and a bind error is reported once, before any worker starts.  It
keeps them open while the workers run: connections waiting on a dead worker's socket wait for
its restart instead of being reset.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence

from gateway.core.address import ListenAddress

BACKLOG = 0xFFFF  # as trio's default; the kernel caps it at net.core.somaxconn


def balancing_supported() -> bool:
    """Whether SO_REUSEPORT spreads connections over the sockets sharing a port (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind(
    addresses: Sequence[ListenAddress], workers: int, *, reuseport: bool
) -> list[list[socket.socket]]:
    """The listening sockets for each of ``workers`` workers: with ``reuseport`` a list of
    distinct sockets per worker (same addresses and ports), otherwise one list shared by
    all.  Raises OSError (every socket opened so far is closed)."""
    opened: list[socket.socket] = []
    try:
        if not reuseport:
            shared = [_listen(family, sockaddr, False) for family, sockaddr in _resolve(addresses)]
            opened.extend(shared)
            return [shared] * workers
        slots: list[list[socket.socket]] = [[] for _ in range(workers)]
        for family, sockaddr in _resolve(addresses):
            if sockaddr[1] != 0:
                _probe(family, sockaddr)
            first = _listen(family, sockaddr, True)
            opened.append(first)
            slots[0].append(first)
            bound = first.getsockname()  # port 0: the others join the port it got
            for slot in slots[1:]:
                sock = _listen(family, (*sockaddr[:1], bound[1], *sockaddr[2:]), True)
                opened.append(sock)
                slot.append(sock)
        return slots
    except BaseException:
        for sock in opened:
            sock.close()
        raise


def _resolve(addresses: Sequence[ListenAddress]) -> list[tuple[int, tuple[object, ...]]]:
    """Every (family, sockaddr) to bind, as trio.open_tcp_listeners resolves ``host:port``."""
    found: list[tuple[int, tuple[object, ...]]] = []
    for host, port in addresses:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        found.extend((int(family), tuple(sockaddr)) for family, _, _, _, sockaddr in infos)
    return found


def _listen(family: int, sockaddr: tuple[object, ...], reuseport: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        _options(sock, family)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def _probe(family: int, sockaddr: tuple[object, ...]) -> None:
    """Fail with EADDRINUSE if anything listens on the address already.

    Sockets that all set SO_REUSEPORT may share a port, so a second gateway started by mistake
    on the same port would silently take half the connections; a socket without it cannot
    bind next to any listener, so this bind tells.
    """
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        _options(sock, family)
        sock.bind(sockaddr)
    finally:
        sock.close()


def _options(sock: socket.socket, family: int) -> None:
    # As trio.open_tcp_listeners: rebind at once after a restart; IPv6 sockets only IPv6.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
