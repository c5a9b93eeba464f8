"""The gateway's Prometheus metrics, read from plain counters when ``/metrics`` is scraped.

The custom-collector pattern (prometheus_client's ``Collector``): nothing on a request's or a
message's path calls into prometheus_client.  Serving code adds to plain ``int`` attributes and
``Counter`` dicts where things happen (:mod:`gateway.stats`, :class:`gateway.mount.Mount`, the
engine's per-connection message counters, the proxy pools, the limiter, the broker, the
upstream authenticator), and :meth:`GatewayCollector.collect` turns their current values into
metric families.  A scrape costs one pass over the open WebSocket connections (to add up their
message counts).

Label values are bounded by the config, never by clients: mount names, route prefixes,
upstream addresses, status and close codes, fixed reason words.  Never paths, users or rooms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway.auth.upstream import UpstreamAuthenticator
from gateway.core.histogram import Histogram

if TYPE_CHECKING:
    from gateway.app import App


def buckets(histogram: Histogram) -> list[tuple[str, float]]:
    """A histogram's cumulative buckets as prometheus_client takes them (``le`` as text)."""
    return [(_le(bound), float(n)) for bound, n in histogram.cumulative()]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class GatewayCollector(Collector):
    """Every ``gateway_*`` metric of one process (see README, "Metrics")."""

    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        yield from self._connections()
        yield from self._websockets()
        yield from self._http()
        yield from self._proxy()
        yield from self._upstream_auth()
        yield from self._limits()
        yield from self._broker()

    # -- the front door -------------------------------------------------------------------

    def _connections(self) -> Iterator[Metric]:
        app, stats = self.app, self.app.stats
        yield GaugeMetricFamily(
            "gateway_connections", "TCP connections open on the public port", app.connections
        )
        yield CounterMetricFamily(
            "gateway_connections_accepted", "TCP connections accepted", stats.accepted
        )
        refused = CounterMetricFamily(
            "gateway_connections_refused",
            "TCP connections answered 503 at the accept (reason: capacity = "
            "server.max_connections, client = limits.connections_per_client)",
            labels=["reason"],
        )
        for reason in ("capacity", "client"):
            refused.add_metric([reason], stats.refused[reason])
        yield refused
        yield GaugeMetricFamily(
            "gateway_draining", "1 while shutting down (readyz answers 503)", int(app.draining)
        )

    def _http(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "gateway_http_requests",
            "HTTP requests answered, but WebSocket handshakes (kind: static, health, proxy, "
            "reject)",
            labels=["kind", "status"],
        )
        for (kind, status), n in sorted(self.app.stats.http.items()):
            requests.add_metric([kind, str(status)], n)
        yield requests

    # -- WebSockets -----------------------------------------------------------------------

    def _websockets(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "gateway_mount_info",
            "Each mount and its path template (always 1)",
            labels=["mount", "path"],
        )
        connections = GaugeMetricFamily(
            "gateway_websocket_connections", "WebSocket sessions open", labels=["mount"]
        )
        handshakes = CounterMetricFamily(
            "gateway_handshakes",
            "WebSocket handshakes by answer (101 accepted; 408: the handshake deadline passed)",
            labels=["mount", "status"],
        )
        received = CounterMetricFamily(
            "gateway_websocket_messages_received",
            "Messages handlers took from their clients",
            labels=["mount"],
        )
        sent = CounterMetricFamily(
            "gateway_websocket_messages_sent",
            "Messages sent to clients (send_message, and each recipient of a fan-out)",
            labels=["mount"],
        )
        bytes_in = CounterMetricFamily(
            "gateway_websocket_received_bytes",
            "Payload bytes of the messages received (text as UTF-8)",
            labels=["mount"],
        )
        bytes_out = CounterMetricFamily(
            "gateway_websocket_sent_bytes",
            "Payload bytes of the messages sent (text as UTF-8)",
            labels=["mount"],
        )
        closes = CounterMetricFamily(
            "gateway_websocket_closes",
            "Sessions ended, by close code (1006: the connection was lost without a Close)",
            labels=["mount", "code"],
        )
        slow = CounterMetricFamily(
            "gateway_websocket_slow_consumer_closes",
            "Sessions closed 1013 because their client did not read (outbound_queue_bytes)",
            labels=["mount"],
        )
        keepalive = CounterMetricFamily(
            "gateway_websocket_keepalive_closes",
            "Sessions closed 1011 because no pong came within ping_timeout",
            labels=["mount"],
        )
        for name, runtime in self.app.mounts.items():
            mount = runtime.mount
            label = [name]
            info.add_metric([name, mount.config.path], 1)
            connections.add_metric(label, len(mount))
            for status, n in sorted(mount.handshakes.items()):
                handshakes.add_metric([name, str(status)], n)
            m_in, m_out = mount.messages_in, mount.messages_out
            b_in, b_out = mount.bytes_in, mount.bytes_out
            for ws in mount.clients:
                m_in += ws.messages_in
                m_out += ws.messages_out
                b_in += ws.bytes_in
                b_out += ws.bytes_out
            received.add_metric(label, m_in)
            sent.add_metric(label, m_out)
            bytes_in.add_metric(label, b_in)
            bytes_out.add_metric(label, b_out)
            for code, n in sorted(mount.closes.items()):
                closes.add_metric([name, str(code)], n)
            slow.add_metric(label, mount.slow_consumer_closes)
            keepalive.add_metric(label, mount.keepalive_closes)
        destroyed = CounterMetricFamily(
            "gateway_websocket_destroyed",
            "Upgrades for a path no mount serves, closed without a byte",
            self.app.stats.destroyed,
        )
        yield from (info, connections, handshakes, received, sent, bytes_in, bytes_out)
        yield from (closes, slow, keepalive, destroyed)

    # -- the proxy ------------------------------------------------------------------------

    def _proxy(self) -> Iterator[Metric]:
        latency = HistogramMetricFamily(
            "gateway_proxy_upstream_duration_seconds",
            "Time from taking an upstream connection (connecting included) to the upstream's "
            "response head, by route (a [[proxy.routes]] prefix, or default)",
            labels=["route"],
        )
        responses = CounterMetricFamily(
            "gateway_proxy_requests",
            "Proxied requests by route and the status the client got (499: it left first)",
            labels=["route", "status"],
        )
        for route, stats in sorted(self.app.stats.routes.items()):
            latency.add_metric([route], buckets(stats.latency), stats.latency.sum)
            for status, n in sorted(stats.statuses.items()):
                responses.add_metric([route, str(status)], n)
        yield latency
        yield responses
        runtime = self.app.proxy
        opened = CounterMetricFamily(
            "gateway_proxy_pool_opened",
            "Connections opened to an upstream",
            labels=["upstream"],
        )
        reused = CounterMetricFamily(
            "gateway_proxy_pool_reused",
            "Requests sent on an idle keep-alive connection instead of a new one",
            labels=["upstream"],
        )
        surplus = CounterMetricFamily(
            "gateway_proxy_pool_surplus",
            "Upstream connections discarded for bytes sent beyond a response",
            labels=["upstream"],
        )
        idle = GaugeMetricFamily(
            "gateway_proxy_pool_idle", "Idle keep-alive upstream connections", labels=["upstream"]
        )
        if runtime is not None:
            for upstream, pool in runtime.pools.pools.items():
                label = [upstream.authority]
                opened.add_metric(label, pool.opened)
                reused.add_metric(label, pool.reused)
                surplus.add_metric(label, pool.surplus)
                idle.add_metric(label, len(pool.idle))
        yield from (opened, reused, surplus, idle)

    def _upstream_auth(self) -> Iterator[Metric]:
        outcomes = CounterMetricFamily(
            "gateway_upstream_auth",
            "auth = 'upstream' verdicts (accepted, 401, 403, unavailable = answered 503)",
            labels=["mount", "outcome"],
        )
        hits = CounterMetricFamily(
            "gateway_upstream_auth_cache_hits",
            "Verdicts taken from the auth_cache_ttl cache",
            labels=["mount"],
        )
        latency = HistogramMetricFamily(
            "gateway_upstream_auth_duration_seconds",
            "Time the auth service took to answer (or to fail)",
            labels=["mount"],
        )
        for name, runtime in self.app.mounts.items():
            auth = runtime.authenticator
            if not isinstance(auth, UpstreamAuthenticator):
                continue
            for outcome in ("accepted", "401", "403", "unavailable"):
                outcomes.add_metric([name, outcome], auth.outcomes[outcome])
            hits.add_metric([name], auth.cache_hits)
            latency.add_metric([name], buckets(auth.latency), auth.latency.sum)
        yield from (outcomes, hits, latency)

    def _limits(self) -> Iterator[Metric]:
        limiter = self.app.limits.limiter
        refused = CounterMetricFamily(
            "gateway_limits_refused",
            "Refusals by the per-client limits (connections: 503, handshakes and requests: 429)",
            labels=["limit"],
        )
        refused.add_metric(["connections"], limiter.refused_connections)
        refused.add_metric(["handshakes"], limiter.refused_handshakes)
        refused.add_metric(["requests"], limiter.refused_requests)
        yield refused
        yield GaugeMetricFamily(
            "gateway_limits_clients", "Client addresses the limits table remembers", len(limiter)
        )
        yield CounterMetricFamily(
            "gateway_limits_evicted",
            "Clients dropped from a full limits table (limits.table_size)",
            limiter.evicted,
        )

    # -- the broker -----------------------------------------------------------------------

    def _broker(self) -> Iterator[Metric]:
        broker = self.app.broker
        if broker is None:
            return
        stats = broker.stats
        connected = GaugeMetricFamily(
            "gateway_broker_connected", "1 while the Redis connection is up", labels=["connection"]
        )
        connected.add_metric(["publish"], int(broker.publishing))
        connected.add_metric(["subscription"], int(broker.subscribed))
        yield connected
        yield CounterMetricFamily(
            "gateway_broker_published", "Broadcasts published to Redis", stats["published"]
        )
        yield _by_suffix(
            stats.items(),
            "publish_dropped_",
            CounterMetricFamily(
                "gateway_broker_publish_dropped",
                "Broadcasts not published (disconnected, queue_full, too_large)",
                labels=["reason"],
            ),
            ("disconnected", "queue_full", "too_large"),
        )
        yield CounterMetricFamily(
            "gateway_broker_received", "Messages received from Redis", stats["received"]
        )
        yield _by_suffix(
            stats.items(),
            "received_invalid_",
            CounterMetricFamily(
                "gateway_broker_received_invalid",
                "Messages from Redis ignored as invalid, by reason",
                labels=["reason"],
            ),
        )
        yield CounterMetricFamily(
            "gateway_broker_delivered",
            "Local deliveries of messages from other processes (one per recipient)",
            stats["delivered"],
        )
        failures = CounterMetricFamily(
            "gateway_broker_connection_failures",
            "Failed or lost Redis connections",
            labels=["connection"],
        )
        reconnects = CounterMetricFamily(
            "gateway_broker_reconnects",
            "Redis connections made again after an outage",
            labels=["connection"],
        )
        for name in ("publish", "subscription"):
            failures.add_metric([name], stats[f"{name}_failures"])
            reconnects.add_metric([name], stats[f"{name}_reconnects"])
        yield failures
        yield reconnects


def _by_suffix(
    items: Iterable[tuple[str, int]],
    prefix: str,
    family: CounterMetricFamily,
    always: tuple[str, ...] = (),
) -> CounterMetricFamily:
    """One sample per ``prefix + reason`` key (and a zero for each of ``always``)."""
    found = {key.removeprefix(prefix): n for key, n in items if key.startswith(prefix)}
    for reason in always:
        found.setdefault(reason, 0)
    for reason, n in sorted(found.items()):
        family.add_metric([reason], n)
    return family


def registry(app: App) -> CollectorRegistry:
    """This process's registry: the gateway's metrics and prometheus_client's process
    metrics (CPU seconds, resident memory, open file descriptors)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(GatewayCollector(app))
    ProcessCollector(registry=reg)
    return reg


def exposition(reg: Collector, accept: str = "") -> tuple[bytes, str]:
    """The scrape's body and content type: Prometheus text, or OpenMetrics when the
    scraper's ``Accept`` asks for it (prometheus_client's own negotiation)."""
    encoder: Callable[[Collector], bytes]
    encoder, content_type = choose_encoder(accept)
    return encoder(reg), content_type
