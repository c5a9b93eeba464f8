"""What one process counts for metrics, as plain numbers on plain objects.

Nothing here knows Prometheus: the serving code adds to these counters where the event
happens (a dict increment per HTTP request or handshake, never per WebSocket message), and
:class:`gateway.admin.collector.GatewayCollector` reads them when ``/metrics`` is scraped.
WebSocket traffic is counted elsewhere, cheaper still: per connection in plain ``int`` slots
(:class:`gateway.ws.connection.WebSocketConnection`) and per mount (:class:`gateway.mount.Mount`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import h11

from gateway.core import handshake
from gateway.core import headers as hdr
from gateway.core.histogram import Histogram
from gateway.core.routing import normalize_path
from gateway.core.upstream import ProxyRoutes, prefix_matches

if TYPE_CHECKING:
    from gateway.app import App

# The values of gateway_http_requests_total's "kind" label.
STATIC, HEALTH, PROXY, REJECT = "static", "health", "proxy", "reject"
DEFAULT_ROUTE = "default"  # the route label of proxy.upstream (no [[proxy.routes]] prefix)
CLIENT_GONE = 499  # a proxied request whose client left before any answer (as nginx logs it)


@dataclass
class RouteStats:
    """One proxy route: time to the upstream's response head, and answers by status."""

    latency: Histogram = field(default_factory=Histogram)
    statuses: Counter[int] = field(default_factory=Counter)


@dataclass
class Stats:
    """The process-wide counters (one per :class:`gateway.app.App`)."""

    # (kind, status) -> requests answered: kinds STATIC, HEALTH, PROXY, REJECT
    http: Counter[tuple[str, int]] = field(default_factory=Counter)
    accepted: int = 0  # connections accepted (and not refused at the accept)
    # connections refused at the accept: "capacity" (server.max_connections) or "client"
    # (limits.connections_per_client)
    refused: Counter[str] = field(default_factory=Counter)
    destroyed: int = 0  # upgrades for a path no mount serves, closed without a byte
    routes: dict[str, RouteStats] = field(default_factory=dict)  # proxy route -> its stats

    def route(self, label: str) -> RouteStats:
        found = self.routes.get(label)
        if found is None:
            found = self.routes[label] = RouteStats()
        return found


def route_label(routes: ProxyRoutes | None, path: str) -> str:
    """The ``route`` label of a proxied request: the ``[[proxy.routes]]`` prefix that took
    ``path`` (as the front door chose it, on the normalised path), or :data:`DEFAULT_ROUTE`.
    Never the path itself: the label's values are the configured prefixes."""
    if routes is not None:
        normalized = normalize_path(path)
        for prefix, _upstream in routes.routes:
            if prefix_matches(prefix, normalized):
                return prefix
    return DEFAULT_ROUTE


def count_refusal(app: App, request: h11.Request, status: int) -> None:
    """A request the front door refused: a handshake refused on a mount's path counts among
    that mount's handshakes (its 400 or 403), anything else as an HTTP ``reject``."""
    if handshake.is_websocket_upgrade(request):
        path = hdr.split_target(request.target)[0].decode("ascii", "replace")
        match = app.policy.router.match(path)
        runtime = app.mounts.get(match.target.name) if match is not None else None
        if runtime is not None:
            runtime.mount.handshakes[status] += 1
            return
    app.stats.http[REJECT, status] += 1
