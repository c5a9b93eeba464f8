"""The supervisor's listening sockets: one set per worker with SO_REUSEPORT, or one shared set;
port 0 resolved once; an address in use refused, even by another SO_REUSEPORT listener."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import pytest

from gateway.core.address import ListenAddress
from gateway.worker_sockets import balancing_supported, bind

LOOPBACK_0 = ListenAddress("127.0.0.1", 0)

linux_only = pytest.mark.skipif(not balancing_supported(), reason="SO_REUSEPORT balancing: Linux")


def close_all(slots: list[list[socket.socket]]) -> None:
    for sockets in slots:
        for sock in sockets:
            sock.close()


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def accepted_by(slots: list[list[socket.socket]], connections: int) -> list[int]:
    """Connect ``connections`` times; how many each slot's socket has waiting to accept."""
    port = slots[0][0].getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(connections)]
    counts = []
    for sockets in slots:
        (sock,) = sockets
        sock.setblocking(False)
        count = 0
        while True:
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                break
            conn.close()
            count += 1
        counts.append(count)
    for client in clients:
        client.close()
    return counts


@linux_only
def test_each_worker_gets_its_own_sockets_on_one_port() -> None:
    slots = bind([LOOPBACK_0], 3, reuseport=True)
    try:
        assert [len(s) for s in slots] == [1, 1, 1]
        sockets = [s[0] for s in slots]
        assert len({id(sock) for sock in sockets}) == 3
        ports = {sock.getsockname() for sock in sockets}
        assert len(ports) == 1  # port 0 picked once, joined by the others
        assert ports.pop()[1] != 0
        counts = accepted_by(slots, 60)
        assert sum(counts) == 60
        assert all(counts), f"the kernel spreads connections over every socket: {counts}"
    finally:
        close_all(slots)


def test_without_reuseport_every_worker_shares_one_set() -> None:
    slots = bind([LOOPBACK_0, LOOPBACK_0], 2, reuseport=False)
    try:
        assert slots[0] is slots[1]
        assert len(slots[0]) == 2
        assert slots[0][0].getsockname()[1] != slots[0][1].getsockname()[1]
    finally:
        close_all(slots[:1])


@pytest.mark.parametrize("reuseport", [pytest.param(True, marks=linux_only), False])
def test_an_address_in_use_is_refused(taken_port: int, reuseport: bool) -> None:
    with pytest.raises(OSError, match="in use") as info:
        bind([ListenAddress("127.0.0.1", taken_port)], 2, reuseport=reuseport)
    assert info.value.errno == errno.EADDRINUSE


@linux_only
def test_another_reuseport_group_on_the_port_is_refused() -> None:
    # Without the probe a second gateway would silently share the first one's port.
    first = bind([LOOPBACK_0], 2, reuseport=True)
    try:
        port = first[0][0].getsockname()[1]
        with pytest.raises(OSError, match="in use") as info:
            bind([ListenAddress("127.0.0.1", port)], 2, reuseport=True)
        assert info.value.errno == errno.EADDRINUSE
    finally:
        close_all(first)


@linux_only
def test_a_fixed_port_is_bound_by_every_worker() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    slots = bind([ListenAddress("127.0.0.1", port)], 2, reuseport=True)
    try:
        assert {s[0].getsockname()[1] for s in slots} == {port}
    finally:
        close_all(slots)
