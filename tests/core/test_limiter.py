"""Per-client connection counts and token buckets, with time passed in
(gateway/core/limiter.py)."""

from __future__ import annotations

import ipaddress
import sys
import tracemalloc

import pytest

from gateway.core.limiter import Limiter, Rate, Settings

ip = ipaddress.ip_address


def limiter(**changes: object) -> Limiter:
    return Limiter(Settings(**changes))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- clients


def test_ipv4_clients_are_their_addresses() -> None:
    lim = limiter()
    assert lim.key(ip("203.0.113.7")) != lim.key(ip("203.0.113.8"))
    assert lim.key(ip("::ffff:203.0.113.7")) == lim.key(ip("203.0.113.7"))
    assert lim.label(lim.key(ip("203.0.113.7"))) == "203.0.113.7"


def test_ipv6_clients_are_grouped_by_prefix() -> None:
    lim = limiter()
    a = lim.key(ip("2001:db8:1:2::1"))
    assert a == lim.key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))  # the same /64
    assert a != lim.key(ip("2001:db8:1:3::1"))
    assert lim.label(a) == "2001:db8:1:2::/64"
    wide = limiter(ipv6_prefix=48)
    assert wide.key(ip("2001:db8:1:2::1")) == wide.key(ip("2001:db8:1:3::1"))
    assert wide.label(wide.key(ip("2001:db8:1:2::1"))) == "2001:db8:1::/48"
    exact = limiter(ipv6_prefix=128)
    assert exact.key(ip("2001:db8::1")) != exact.key(ip("2001:db8::2"))


def test_ipv4_and_ipv6_keys_never_collide() -> None:
    lim = limiter(ipv6_prefix=128)
    assert lim.key(ip("::1.2.3.4")) != lim.key(ip("1.2.3.4"))  # IPv4-compatible is IPv6
    assert lim.key(ip("::")) != lim.key(ip("0.0.0.0"))


# --------------------------------------------------------------------------- connections


def test_connections_are_capped_per_client() -> None:
    lim = limiter(connections=3)
    a, b = lim.key(ip("192.0.2.1")), lim.key(ip("192.0.2.2"))
    assert [lim.connect(a) for _ in range(4)] == [True, True, True, False]
    assert lim.open_connections(a) == 3  # the refused one was not counted
    assert lim.refused_connections == 1
    assert lim.connect(b)  # another client is unaffected
    lim.disconnect(a, now=1.0)
    assert lim.connect(a)
    assert not lim.connect(a)


def test_a_client_with_no_connections_left_holds_no_entry() -> None:
    lim = limiter(connections=2)
    a = lim.key(ip("192.0.2.1"))
    lim.connect(a)
    lim.connect(a)
    lim.disconnect(a, now=0.0)
    lim.disconnect(a, now=0.0)
    assert len(lim) == 0
    lim.disconnect(a, now=0.0)  # one too many (a shell bug) is ignored, never negative
    assert lim.open_connections(a) == 0
    assert [lim.connect(a), lim.connect(a), lim.connect(a)] == [True, True, False]


def test_connection_counts_survive_any_flood_of_other_addresses() -> None:
    # Entries with open connections are never evicted: otherwise rotating addresses would
    # wipe a client's count and let it past its cap.
    lim = limiter(connections=2, table_size=100)
    a = lim.key(ip("192.0.2.1"))
    assert lim.connect(a) and lim.connect(a)
    for i in range(10_000):
        lim.handshake(lim.key(ip(0x0A000000 + i)), now=0.0)
    assert not lim.connect(a)
    assert lim.open_connections(a) == 2


# --------------------------------------------------------------------------- buckets


def test_handshakes_burst_then_rate() -> None:
    lim = limiter(handshakes=Rate(20.0, 40))
    a = lim.key(ip("192.0.2.1"))
    assert all(lim.handshake(a, now=0.0) is None for _ in range(40))
    wait = lim.handshake(a, now=0.0)
    assert wait == pytest.approx(0.05)  # one token every 1/20 s
    assert lim.refused_handshakes == 1
    assert lim.handshake(a, now=0.025) == pytest.approx(0.025)
    assert lim.handshake(a, now=0.05) is None
    assert lim.handshake(a, now=0.05) is not None
    # A long pause refills to the burst, never beyond it.
    assert sum(lim.handshake(a, now=1000.0) is None for _ in range(100)) == 40


def test_buckets_are_per_client() -> None:
    lim = limiter(handshakes=Rate(1.0, 2))
    a, b = lim.key(ip("192.0.2.1")), lim.key(ip("2001:db8::1"))
    assert lim.handshake(a, 0.0) is None and lim.handshake(a, 0.0) is None
    assert lim.handshake(a, 0.0) == pytest.approx(1.0)
    assert lim.handshake(b, 0.0) is None


def test_a_rate_of_zero_is_off_and_tracks_nothing() -> None:
    lim = limiter(handshakes=Rate(0.0, 1))
    a = lim.key(ip("192.0.2.1"))
    assert all(lim.handshake(a, 0.0) is None for _ in range(1000))
    assert lim.request(a, 0.0) is None  # requests are off by default
    assert len(lim) == 0


def test_requests_have_their_own_bucket() -> None:
    lim = limiter(handshakes=Rate(1.0, 1), requests=Rate(10.0, 3))
    a = lim.key(ip("192.0.2.1"))
    assert [lim.request(a, 0.0) is None for _ in range(4)] == [True, True, True, False]
    assert lim.refused_requests == 1
    assert lim.handshake(a, 0.0) is None  # untouched by the requests
    assert lim.request(a, 0.1) is None


def test_time_going_back_refills_nothing() -> None:
    lim = limiter(handshakes=Rate(1.0, 1))
    a = lim.key(ip("192.0.2.1"))
    assert lim.handshake(a, 10.0) is None
    assert lim.handshake(a, 5.0) is not None


# --------------------------------------------------------------------------- logging


def test_a_client_is_logged_at_most_once_per_interval() -> None:
    lim = limiter(log_interval=60.0)
    a, b = lim.key(ip("192.0.2.1")), lim.key(ip("192.0.2.2"))
    assert lim.should_log(a, 0.0)
    assert not lim.should_log(a, 1.0)
    assert not lim.should_log(a, 59.9)
    assert lim.should_log(b, 1.0)
    assert lim.should_log(a, 60.0)


def test_the_log_interval_is_remembered_for_a_client_with_connections() -> None:
    lim = limiter(connections=1)
    a = lim.key(ip("192.0.2.1"))
    lim.connect(a)
    assert lim.should_log(a, 0.0)
    lim.disconnect(a, 1.0)  # it goes to the LRU with what it knows
    assert not lim.should_log(a, 2.0)


# --------------------------------------------------------------------------- memory


def test_memory_stays_bounded_under_100000_addresses() -> None:
    """Spoofed or rotating addresses evict the oldest clients: the table never grows past
    ``table_size``, and its memory stops growing once it is full."""
    lim = limiter(table_size=10_000)
    keys = [lim.key(ip(0x0A000000 + i)) for i in range(100_000)]  # distinct clients

    def serve(chunk: list[int], start: int) -> None:
        for i, key in enumerate(chunk, start):
            lim.handshake(key, now=i * 1e-4)
            lim.should_log(key, now=i * 1e-4)

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        serve(keys[:10_000], 0)  # fills the table
        full = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # ~360 bytes a client on CPython 3.11-3.13 (README); 1 KiB leaves room for other builds.
    assert full < 10_000 * 1024, f"{full / 10_000:.0f} bytes per client"
    blocks = sys.getallocatedblocks()
    serve(keys[10_000:], 10_000)  # 90,000 more, each new
    assert len(lim) == 10_000
    assert lim.evicted == 90_000
    assert sys.getallocatedblocks() - blocks < 1_000  # not one block per client


def test_rotating_through_one_ipv6_prefix_is_one_client() -> None:
    lim = limiter(handshakes=Rate(20.0, 40))
    base = int(ip("2001:db8:1:2::"))
    refused = sum(lim.handshake(lim.key(ip(base + i)), now=0.0) is not None for i in range(1000))
    assert len(lim) == 1
    assert refused == 1000 - 40


def test_quiet_entries_expire_without_eviction() -> None:
    lim = limiter(handshakes=Rate(20.0, 40), log_interval=60.0)
    for i in range(100):
        lim.handshake(lim.key(ip(0x0A000000 + i)), now=0.0)
    assert len(lim) == 100
    # Ten seconds on, those buckets are full again (they say nothing): each new client sweeps
    # stale ones off the old end instead of evicting.
    for i in range(100):
        lim.handshake(lim.key(ip(0x0B000000 + i)), now=10.0)
    assert len(lim) == 100
    assert lim.evicted == 0
    # An entry that was logged is kept for its log interval.
    logged = limiter(handshakes=Rate(20.0, 40), log_interval=60.0)
    a = logged.key(ip("192.0.2.1"))
    assert logged.should_log(a, 0.0)
    logged.handshake(logged.key(ip("192.0.2.2")), now=10.0)
    assert len(logged) == 2  # the first is still within its interval: kept
    logged.handshake(logged.key(ip("192.0.2.3")), now=61.0)
    assert len(logged) == 1  # both went stale: swept by the newcomer
    assert logged.should_log(a, 61.0)


# --------------------------------------------------------------------------- settings


def test_each_worker_gets_its_share() -> None:
    settings = Settings(connections=256, handshakes=Rate(20.0, 40), requests=Rate(0.0, 100))
    assert settings.share(1) is settings
    share = settings.share(3)
    assert share.connections == 86  # rounded up: never below the configured total
    assert share.handshakes == Rate(20.0 / 3, 14)
    assert share.requests == Rate(0.0, 34)
    assert share.table_size == settings.table_size
    assert Settings(connections=0).share(4).connections == 0  # off stays off
    assert Settings(connections=1).share(4).connections == 1


@pytest.mark.parametrize(
    "changes",
    [{"connections": -1}, {"ipv6_prefix": 129}, {"table_size": 0}],
)
def test_settings_refuse_nonsense(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="invalid"):
        Settings(**changes)  # type: ignore[arg-type]


def test_rate_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="burst"):
        Rate(1.0, 0)
