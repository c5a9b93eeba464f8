"""The I/O side of ``[limits]``: one client address cannot take the gateway from everyone.

The decisions are :class:`gateway.core.limiter.Limiter`'s (pure, time passed in) and the
client's address is :func:`gateway.core.address.client_address`'s; this module applies them at
the three places a client spends the gateway's resources, with trio's clock:

* **accept** (:meth:`ClientLimits.admit`, from :mod:`gateway.server`): a connection from a
  client that already holds ``connections_per_client`` is answered a fixed 503 at once and
  closed, before a byte is read, so over-limit connections never hold a place among
  ``server.max_connections``.  Each admitted connection holds a :class:`Slot` that the server
  releases when the connection ends.  A trusted proxy's connections are not counted here:
  they carry many clients' requests;
* **handshake** (:meth:`ClientLimits.check_upgrade`, from :mod:`gateway.http.http11`): the
  client's handshake bucket (429 + ``Retry-After``); for a connection from a trusted proxy the
  forwarded client is counted from its upgrade on (503 past its connections), since a
  WebSocket through a proxy is one proxy connection per client;
* **proxied request** (:meth:`ClientLimits.check_request`): the client's request bucket (429).

Refusals never wait: the answer goes out at once.  Each is logged at most once per client per
``log_interval`` (the limiter's table) and at most :data:`LOG_BURST` lines a minute in all, so
rotating addresses cannot flood the log either.  A worker enforces its share of the limits
(:meth:`gateway.core.limiter.Settings.share`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Literal

import trio
from trio_websocket import Endpoint

from gateway.config.schema import Config
from gateway.core.address import (
    IPAddress,
    Network,
    client_address,
    in_networks,
    unmapped,
)
from gateway.core.decisions import Reject
from gateway.core.limiter import Limiter, Rate, Settings
from gateway.log import RateLimit

log = logging.getLogger("gateway.limits")

Headers = Sequence[tuple[bytes, bytes]]

LOG_BURST = 20  # limit lines a minute, over all clients
CONNECTIONS_DETAIL = "too many connections from your address"
# Sent at the accept, before reading anything: the request is not known yet.
CONNECTIONS_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n"
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: "
    + str(len(CONNECTIONS_DETAIL) + 1).encode()
    + b"\r\nconnection: close\r\n\r\n"
    + CONNECTIONS_DETAIL.encode()
    + b"\n"
)
_CONNECTIONS = Reject(503, CONNECTIONS_DETAIL, (("Retry-After", "1"),), close=True)


class Slot:
    """The per-client place one accepted connection holds until it ends (``key``: the client
    counted, ``None`` while nobody is)."""

    __slots__ = ("key",)

    def __init__(self) -> None:
        self.key: int | None = None


class ClientLimits:
    """``[limits]`` for one process; :attr:`limiter` holds the counters for metrics."""

    def __init__(self, settings: Settings, trusted: Sequence[Network] = ()) -> None:
        self.limiter = Limiter(settings)
        self.trusted = tuple(trusted)
        self._counting = settings.connections > 0
        self._log_limit = RateLimit(burst=LOG_BURST, interval=60.0)

    @classmethod
    def from_config(cls, config: Config) -> ClientLimits:
        """The limits of ``config``, divided by its worker count; trusted proxies are
        ``server.trusted_proxies`` and ``proxy.trusted_proxies`` (validated by the loader)."""
        limits = config.limits
        settings = Settings(
            connections=limits.connections_per_client,
            handshakes=Rate(limits.handshakes_per_second, limits.handshake_burst),
            requests=Rate(limits.requests_per_second, limits.request_burst),
            ipv6_prefix=limits.ipv6_prefix,
            table_size=limits.table_size,
        )
        return cls(settings.share(workers(config)), config.trusted_networks)

    def retune(self, config: Config) -> None:
        """A reload: ``config``'s limits and trusted proxies from now on, keeping the counts
        (a client's open connections and buckets carry over; ``ipv6_prefix``, which makes
        the keys, is kept by the reload until a restart)."""
        fresh = ClientLimits.from_config(config)
        self.limiter.settings = fresh.limiter.settings
        self.trusted = fresh.trusted
        self._counting = fresh._counting

    # -- accept -----------------------------------------------------------------------------

    def admit(self, remote: Endpoint | None) -> Slot | None:
        """A new connection from ``remote`` (the peer's endpoint; ``None``: not an IP peer, or
        gone already): its :class:`Slot`, or ``None`` when its client is at
        ``connections_per_client`` (answer :data:`CONNECTIONS_RESPONSE` and close)."""
        slot = Slot()
        if not self._counting or remote is None:
            return slot  # nothing to count
        peer = unmapped(remote.address)
        if self.trusted and in_networks(peer, self.trusted):
            return slot  # a proxy: its clients are counted at their upgrades
        key = self.limiter.key(peer)
        if not self.limiter.connect(key):
            self._log(key, 503, self._connections_text(), hint=_proxy_like(peer))
            return None
        slot.key = key
        return slot

    def release(self, slot: Slot) -> None:
        """The connection holding ``slot`` has ended."""
        if slot.key is not None:
            self.limiter.disconnect(slot.key, trio.current_time())
            slot.key = None

    # -- requests ---------------------------------------------------------------------------

    def client(self, remote: Endpoint | None, headers: Headers) -> IPAddress | None:
        """The client's address (``None`` when the peer is unknown: a memory stream)."""
        if remote is None:
            return None
        return client_address(remote.address, headers, self.trusted)

    def check_upgrade(
        self, slot: Slot | None, remote: Endpoint | None, headers: Headers
    ) -> tuple[Reject | None, str | None]:
        """A WebSocket handshake: ``(refusal or None, the forwarded client's address when
        the peer is a trusted proxy that named another one, for ``session.remote``)``."""
        if remote is None:
            return None, None
        limiter = self.limiter
        forwarded = None
        if self._from_proxy(remote):
            client = client_address(remote.address, headers, self.trusted)
            key = limiter.key(client)
            if client != unmapped(remote.address):
                forwarded = str(client)
            if slot is not None and slot.key is None and self._counting:
                # Through a proxy: this connection is the client's from its upgrade on.
                if not limiter.connect(key):
                    self._log(key, 503, self._connections_text())
                    return _CONNECTIONS, forwarded
                slot.key = key
        else:
            key = limiter.key(remote.address)  # the slot, if any, was taken at the accept
        wait = limiter.handshake(key, trio.current_time())
        if wait is None:
            return None, forwarded
        return self._over(key, "handshakes", wait, remote, headers, close=True), forwarded

    def check_request(self, remote: Endpoint | None, headers: Headers) -> Reject | None:
        """A request for the proxy: ``None``, or the 429 to answer (the connection stays)."""
        if not self.limiter.settings.requests.on:
            return None
        client = self.client(remote, headers)
        if client is None or remote is None:
            return None
        limiter = self.limiter
        key = limiter.key(client)
        wait = limiter.request(key, trio.current_time())
        if wait is None:
            return None
        return self._over(key, "requests", wait, remote, headers, close=False)

    # -- helpers ----------------------------------------------------------------------------

    def _over(
        self,
        key: int,
        what: Literal["handshakes", "requests"],
        wait: float,
        remote: Endpoint,
        headers: Headers,
        *,
        close: bool,
    ) -> Reject:
        """Log (rate-limited) and build the 429 for a client over its ``what`` rate."""
        rate = getattr(self.limiter.settings, what)
        self._log(
            key,
            429,
            f"over {rate.per_second:g} {what}/s (burst {rate.burst})",
            hint=self._spoofed(remote, headers),
        )
        return _too_many(f"too many {what} from your address", wait, close=close)

    def _from_proxy(self, remote: Endpoint) -> bool:
        return bool(self.trusted) and in_networks(remote.address, self.trusted)

    def _spoofed(self, remote: Endpoint, headers: Headers) -> bool:
        """An untrusted peer sent X-Forwarded-For: maybe a proxy nobody listed."""
        return not self._from_proxy(remote) and any(n == b"x-forwarded-for" for n, _ in headers)

    def _connections_text(self) -> str:
        return f"{self.limiter.settings.connections} connections open"

    def _log(self, key: int, status: int, what: str, *, hint: bool = False) -> None:
        """One WARNING per client per interval, and at most LOG_BURST a minute in all."""
        limiter = self.limiter
        if not limiter.should_log(key, trio.current_time()):
            return
        dropped = self._log_limit.allow()
        if dropped is None:
            return
        log.warning(
            "client %s refused %d: %s (logged once per %gs per client%s)%s",
            limiter.label(key),
            status,
            what,
            limiter.settings.log_interval,
            f"; {dropped} other clients' lines dropped" if dropped else "",
            "; if this is a proxy, list it in server.trusted_proxies" if hint else "",
        )


def _too_many(detail: str, wait: float, *, close: bool) -> Reject:
    retry = str(max(1, math.ceil(wait)))
    return Reject(429, detail, (("Retry-After", retry),), close=close)


def _proxy_like(address: IPAddress) -> bool:
    """A loopback or private peer over its limit is most likely a proxy nobody listed."""
    return address.is_loopback or address.is_private


def workers(config: Config) -> int:
    """How many processes share the limits (``"auto"``: one per usable CPU, as the CLI)."""
    setting = config.server.workers
    if setting != "auto":
        return max(1, setting)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
