"""Per-client limits (``[limits]``): open connections and token buckets per client address.

Pure: no trio and no clock.  Every call that depends on time takes ``now`` (seconds from any
fixed origin, never going back) from the shell, :mod:`gateway.client_limits`, so the tests
drive time by hand.

**Clients.** A client is its IPv4 address, or its IPv6 address cut to ``ipv6_prefix`` bits
(default /64: an ISP gives one host a /64, and a host can take any of its 2**64 addresses;
counting those one by one would count nothing).  IPv4-mapped IPv6 addresses are IPv4.  The
address itself is chosen by :func:`gateway.core.address.client_address`.

**Limits.** ``connections`` open connections per client (a counter: :meth:`connect` /
:meth:`disconnect`); handshakes and proxied HTTP requests per second per client, each a token
bucket (``per_second`` tokens a second, at most ``burst`` saved; one token per handshake or
request; ``per_second = 0`` turns it off), as nginx's ``limit_conn`` and ``limit_req``.

**Memory.** A client that holds open connections is kept in one table; there is at most one
such entry per open connection, so that table is bounded by ``server.max_connections``.  Every
other client (only buckets and the time it was last logged) lives in an LRU of at most
``table_size`` entries: a new address evicts the least recently seen one, so spoofed or
rotating addresses cannot grow it without bound.  An entry that carries no information any
more (its buckets have refilled and its log interval has passed) is dropped as the LRU's old
end comes by.  What eviction costs: an evicted client starts again with a full bucket.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass, field

from gateway.core.address import IPAddress, unmapped

# IPv6 keys are offset past every IPv4 key, so one int key space holds both.
_V6 = 1 << 128
# Expired entries dropped from the LRU's old end per insertion: amortized cleaning that keeps
# a quiet table small without ever walking it.
_SWEEP = 2


@dataclass(frozen=True)
class Rate:
    """A token bucket's shape: ``per_second`` (0: no limit) and ``burst`` (>= 1)."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_second < 0 or self.burst < 1:
            raise ValueError(f"a rate needs per_second >= 0 and burst >= 1, got {self}")

    @property
    def on(self) -> bool:
        return self.per_second > 0

    def share(self, workers: int) -> Rate:
        """One worker's share: the rate divided, the burst divided rounding up."""
        return Rate(self.per_second / workers, math.ceil(self.burst / workers))


@dataclass(frozen=True)
class Settings:
    """What :class:`Limiter` enforces (``[limits]`` after :meth:`share`)."""

    connections: int = 256  # open connections per client; 0: no limit
    handshakes: Rate = field(default_factory=lambda: Rate(20.0, 40))
    requests: Rate = field(default_factory=lambda: Rate(0.0, 100))
    ipv6_prefix: int = 64
    table_size: int = 10_000
    log_interval: float = 60.0  # a refused client is logged at most once per this

    def __post_init__(self) -> None:
        if self.connections < 0 or not 0 <= self.ipv6_prefix <= 128 or self.table_size < 1:
            raise ValueError(f"invalid limiter settings: {self}")

    def share(self, workers: int) -> Settings:
        """One of ``workers`` processes' share: counts and rates divided (rounding up), so the
        host as a whole enforces about the configured numbers; the table bound is per process."""
        if workers <= 1:
            return self
        return Settings(
            connections=math.ceil(self.connections / workers),
            handshakes=self.handshakes.share(workers),
            requests=self.requests.share(workers),
            ipv6_prefix=self.ipv6_prefix,
            table_size=self.table_size,
            log_interval=self.log_interval,
        )


class _Entry:
    """One client: open connections, two buckets, when it was last logged, and the time from
    which it carries no information (then it may be dropped)."""

    __slots__ = ("hs_at", "hs_tokens", "logged_at", "open", "rq_at", "rq_tokens", "stale_at")

    def __init__(self, settings: Settings) -> None:
        self.open = 0
        self.hs_tokens = float(settings.handshakes.burst)
        self.hs_at = 0.0
        self.rq_tokens = float(settings.requests.burst)
        self.rq_at = 0.0
        self.logged_at = -math.inf
        self.stale_at = -math.inf


def _refill(tokens: float, at: float, rate: Rate, now: float) -> float:
    if now > at:
        return min(float(rate.burst), tokens + (now - at) * rate.per_second)
    return tokens


def _take(tokens: float, at: float, rate: Rate, now: float) -> tuple[float, float | None]:
    """One token from a bucket that held ``tokens`` at ``at``: ``(tokens left, None)`` when
    there was one, else ``(tokens, seconds until there is one)``."""
    tokens = _refill(tokens, at, rate, now)
    if tokens >= 1:
        return tokens - 1, None
    return tokens, (1 - tokens) / rate.per_second


def _full_at(tokens: float, at: float, rate: Rate) -> float:
    """When a bucket holding ``tokens`` at ``at`` is full again."""
    missing = rate.burst - tokens
    return at + missing / rate.per_second if missing > 0 and rate.on else -math.inf


class Limiter:
    """Per-client counters and buckets; see the module docstring.

    The ``refused_*`` and ``evicted`` counters are for metrics; :meth:`__len__` is the number
    of clients tracked.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._prefix_shift = 128 - settings.ipv6_prefix
        self._open: dict[int, _Entry] = {}  # clients with open connections
        self._idle: OrderedDict[int, _Entry] = OrderedDict()  # the others, oldest first
        self.refused_connections = 0
        self.refused_handshakes = 0
        self.refused_requests = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._open) + len(self._idle)

    # -- keys -------------------------------------------------------------------------------

    def key(self, address: IPAddress) -> int:
        """The client ``address`` belongs to (see "Clients" in the module docstring)."""
        address = unmapped(address)
        if address.version == 4:
            return int(address)
        shift = self._prefix_shift
        return _V6 | (int(address) >> shift << shift)

    def label(self, key: int) -> str:
        """``203.0.113.7`` or ``2001:db8:1:2::/64``: the client, for a log line."""
        if key < _V6:
            return str(ipaddress.IPv4Address(key))
        return str(ipaddress.IPv6Network((key ^ _V6, self.settings.ipv6_prefix)))

    # -- open connections -------------------------------------------------------------------

    def connect(self, key: int) -> bool:
        """Count a new connection for ``key``: ``False`` (and not counted) when the client
        already has ``connections`` open.  Only call with the limit on (``connections > 0``)."""
        entry = self._open.get(key)
        if entry is None:
            entry = self._idle.pop(key, None) or _Entry(self.settings)
            self._open[key] = entry
        elif entry.open >= self.settings.connections:
            self.refused_connections += 1
            return False
        entry.open += 1
        return True

    def disconnect(self, key: int, now: float) -> None:
        """A connection :meth:`connect` counted has closed."""
        entry = self._open.get(key)
        if entry is None:
            return  # not counted (a shell bug must not break a connection's teardown)
        entry.open -= 1
        if entry.open > 0:
            return
        del self._open[key]
        if entry.stale_at > now:  # its buckets or log interval still say something: keep it
            self._insert(key, entry, now)

    def open_connections(self, key: int) -> int:
        entry = self._open.get(key)
        return 0 if entry is None else entry.open

    # -- rates ------------------------------------------------------------------------------

    def handshake(self, key: int, now: float) -> float | None:
        """Take a handshake token: ``None`` when allowed, else the seconds until one is
        available (for ``Retry-After``)."""
        rate = self.settings.handshakes
        if not rate.on:
            return None
        entry = self._entry(key, now)
        entry.hs_tokens, wait = _take(entry.hs_tokens, entry.hs_at, rate, now)
        entry.hs_at = now
        self._stale(entry)
        if wait is not None:
            self.refused_handshakes += 1
        return wait

    def request(self, key: int, now: float) -> float | None:
        """Take a proxied-request token: as :meth:`handshake`, for ``requests``."""
        rate = self.settings.requests
        if not rate.on:
            return None
        entry = self._entry(key, now)
        entry.rq_tokens, wait = _take(entry.rq_tokens, entry.rq_at, rate, now)
        entry.rq_at = now
        self._stale(entry)
        if wait is not None:
            self.refused_requests += 1
        return wait

    def should_log(self, key: int, now: float) -> bool:
        """Whether a refusal of ``key`` is to be logged now: at most once per
        ``log_interval`` per client (the shell also bounds lines across clients)."""
        entry = self._entry(key, now)
        if now - entry.logged_at < self.settings.log_interval:
            return False
        entry.logged_at = now
        self._stale(entry)
        return True

    # -- the table --------------------------------------------------------------------------

    def _entry(self, key: int, now: float) -> _Entry:
        entry = self._open.get(key)
        if entry is not None:
            return entry
        entry = self._idle.get(key)
        if entry is not None:
            self._idle.move_to_end(key)
            return entry
        entry = _Entry(self.settings)
        self._insert(key, entry, now)
        return entry

    def _insert(self, key: int, entry: _Entry, now: float) -> None:
        idle = self._idle
        for _ in range(_SWEEP):  # drop what has gone stale at the old end
            if not idle:
                break
            oldest = next(iter(idle.values()))
            if oldest.stale_at > now:
                break
            idle.popitem(last=False)
        idle[key] = entry
        if len(idle) > self.settings.table_size:
            idle.popitem(last=False)
            self.evicted += 1

    def _stale(self, entry: _Entry) -> None:
        s = self.settings
        entry.stale_at = max(
            _full_at(entry.hs_tokens, entry.hs_at, s.handshakes),
            _full_at(entry.rq_tokens, entry.rq_at, s.requests),
            entry.logged_at + s.log_interval,
        )
