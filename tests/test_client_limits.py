"""The shell of ``[limits]`` without sockets: what each check answers, slots through a trusted
proxy, and the log bounds (gateway/client_limits.py; the server-level tests are in
tests/integration/test_client_limits.py)."""

from __future__ import annotations

import ipaddress
import logging

import pytest
from trio_websocket import Endpoint

from gateway.client_limits import ClientLimits, Slot
from gateway.core.address import parse_networks
from gateway.core.limiter import Rate, Settings
from gateway.log import RateLimit

PROXY = Endpoint("10.0.0.2", 40000, False)


def xff(address: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-forwarded-for", address.encode())]


def limits(**changes: object) -> ClientLimits:
    return ClientLimits(Settings(**changes), parse_networks(["10.0.0.0/8"]))  # type: ignore[arg-type]


async def test_handshake_refusal_is_a_429_with_retry_after() -> None:
    lim = limits(handshakes=Rate(0.5, 1))
    peer = Endpoint("192.0.2.1", 5000, False)
    assert lim.check_upgrade(None, peer, []) == (None, None)
    refusal, forwarded = lim.check_upgrade(None, peer, [])
    assert refusal is not None and forwarded is None
    assert (refusal.status, refusal.headers, refusal.close) == (429, (("Retry-After", "2"),), True)


async def test_through_a_trusted_proxy_the_slot_is_the_forwarded_clients() -> None:
    lim = limits(connections=1)
    first, second = Slot(), Slot()
    assert lim.check_upgrade(first, PROXY, xff("203.0.113.7")) == (None, "203.0.113.7")
    key = lim.limiter.key(ipaddress.ip_address("203.0.113.7"))
    assert first.key == key and lim.limiter.open_connections(key) == 1
    refusal, _ = lim.check_upgrade(second, PROXY, xff("203.0.113.7"))
    assert refusal is not None and refusal.status == 503
    assert second.key is None  # nothing to release
    lim.release(first)
    assert first.key is None and lim.limiter.open_connections(key) == 0
    assert lim.check_upgrade(second, PROXY, xff("203.0.113.7"))[0] is None


async def test_a_direct_client_keeps_the_slot_it_got_at_the_accept() -> None:
    lim = limits(connections=1)
    slot = Slot()
    slot.key = lim.limiter.key(ipaddress.ip_address("192.0.2.1"))
    lim.limiter.connect(slot.key)
    peer = Endpoint("192.0.2.1", 5000, False)
    # A forged header from a peer that is not a proxy changes nothing, counts nothing twice.
    assert lim.check_upgrade(slot, peer, xff("203.0.113.7")) == (None, None)
    assert lim.limiter.open_connections(slot.key) == 1


async def test_request_refusal_keeps_the_connection() -> None:
    lim = limits(requests=Rate(1.0, 1))
    peer = Endpoint("192.0.2.1", 5000, False)
    assert lim.check_request(peer, []) is None
    refusal = lim.check_request(peer, [])
    assert refusal is not None
    assert (refusal.status, refusal.close) == (429, False)
    assert limits().check_request(peer, []) is None  # off by default


async def test_log_lines_are_bounded_per_client_and_in_all(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "gateway.limits")
    lim = limits(handshakes=Rate(0.001, 1))
    clock = [0.0]
    lim._log_limit = RateLimit(burst=20, interval=60.0, clock=lambda: clock[0])
    for i in range(30):  # thirty rotating addresses, each refused three times
        peer = Endpoint(f"192.0.2.{i}", 5000, False)
        for _ in range(4):
            lim.check_upgrade(None, peer, [])
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.limits"]
    assert len(lines) == 20
    assert lines[0].startswith("client 192.0.2.0 refused 429: over 0.001 handshakes/s (burst 1)")
    clock[0] = 61.0
    lim.check_upgrade(None, Endpoint("192.0.2.200", 5000, False), [])
    lim.check_upgrade(None, Endpoint("192.0.2.200", 5000, False), [])
    last = [r.getMessage() for r in caplog.records if r.name == "gateway.limits"][-1]
    assert "10 other clients' lines dropped" in last


async def test_a_spoofing_looking_peer_gets_the_proxy_hint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "gateway.limits")
    lim = limits(handshakes=Rate(0.001, 1))
    stranger = Endpoint("198.51.100.9", 5000, False)
    for _ in range(2):
        lim.check_upgrade(None, stranger, xff("203.0.113.7"))
    assert "list it in server.trusted_proxies" in caplog.text
