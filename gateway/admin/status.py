"""What the status page shows, computed from metric families (pure: no I/O, no clock).

The page reads the same numbers Prometheus scrapes: :func:`snapshot` folds a list of metric
families (this process's, or the supervisor's merge of every worker's, which carry a
``worker`` label) into one JSON-ready dict, summing over every label it does not show.  So the
page can never disagree with ``/metrics``, and ``--workers`` needs no second code path.
:class:`History` keeps a point per second for the charts (the last :data:`HISTORY_SECONDS`);
the page computes rates from consecutive points.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from prometheus_client.metrics_core import Metric

HISTORY_SECONDS = 300  # the charts' span: five minutes, a point a second

Json = dict[str, Any]


def snapshot(families: Iterable[Metric], now: float) -> Json:
    """The page's current picture: every mount (path, clients, messages and bytes each way,
    handshakes by status, closes by code), every proxy route (requests by status, latency
    sum and count, cumulative latency buckets), HTTP requests by kind and status, the
    workers seen and how many answered."""
    mounts: dict[str, Json] = {}
    routes: dict[str, Json] = {}
    http: dict[str, float] = {}
    workers: set[str] = set()
    totals: dict[str, float] = {}

    def mount(name: str) -> Json:
        found = mounts.get(name)
        if found is None:
            found = mounts[name] = {
                "path": "",
                "clients": 0,
                "received": 0,
                "sent": 0,
                "received_bytes": 0,
                "sent_bytes": 0,
                "handshakes": {},
                "closes": {},
                "slow_consumer_closes": 0,
                "keepalive_closes": 0,
            }
        return found

    def route(name: str) -> Json:
        found = routes.get(name)
        if found is None:
            found = routes[name] = {"requests": 0, "statuses": {}, "sum": 0.0, "buckets": {}}
        return found

    simple = {
        "gateway_websocket_connections": "clients",
        "gateway_websocket_messages_received_total": "received",
        "gateway_websocket_messages_sent_total": "sent",
        "gateway_websocket_received_bytes_total": "received_bytes",
        "gateway_websocket_sent_bytes_total": "sent_bytes",
        "gateway_websocket_slow_consumer_closes_total": "slow_consumer_closes",
        "gateway_websocket_keepalive_closes_total": "keepalive_closes",
    }
    for family in families:
        for sample in family.samples:
            labels, value, name = sample.labels, sample.value, sample.name
            if "worker" in labels:
                workers.add(labels["worker"])
            if name == "gateway_mount_info":
                mount(labels["mount"])["path"] = labels["path"]
            elif name in simple:
                key = simple[name]
                entry = mount(labels["mount"])
                entry[key] += value
            elif name == "gateway_handshakes_total":
                _add(mount(labels["mount"])["handshakes"], labels["status"], value)
            elif name == "gateway_websocket_closes_total":
                _add(mount(labels["mount"])["closes"], labels["code"], value)
            elif name == "gateway_proxy_requests_total":
                entry = route(labels["route"])
                entry["requests"] += value
                _add(entry["statuses"], labels["status"], value)
            elif name == "gateway_proxy_upstream_duration_seconds_sum":
                route(labels["route"])["sum"] += value
            elif name == "gateway_proxy_upstream_duration_seconds_bucket":
                _add(route(labels["route"])["buckets"], labels["le"], value)
            elif name == "gateway_http_requests_total":
                _add(http, f"{labels['kind']} {labels['status']}", value)
            elif name in ("gateway_connections", "gateway_draining", "gateway_worker_up"):
                totals[name] = totals.get(name, 0) + value
    for entry in routes.values():
        entry["count"] = entry["buckets"].get("+Inf", 0)
    return {
        "t": now,
        "mounts": mounts,
        "routes": routes,
        "http": http,
        "connections": totals.get("gateway_connections", 0),
        "draining": bool(totals.get("gateway_draining", 0)),
        "workers": sorted(workers, key=lambda w: (len(w), w)),
        "workers_up": totals.get("gateway_worker_up", 0),
    }


def _add(table: dict[str, float], key: str, value: float) -> None:
    table[key] = table.get(key, 0) + value


def point(snap: Json) -> Json:
    """A chart point: per mount ``[clients, received, sent]``, per route ``[requests,
    latency sum, latency count]`` (cumulative: the page takes differences)."""
    return {
        "t": snap["t"],
        "m": {n: [m["clients"], m["received"], m["sent"]] for n, m in snap["mounts"].items()},
        "r": {n: [r["requests"], r["sum"], r["count"]] for n, r in snap["routes"].items()},
    }


class History:
    """The last ``size`` chart points, oldest first."""

    def __init__(self, size: int = HISTORY_SECONDS) -> None:
        self.points: deque[Json] = deque(maxlen=size)

    def add(self, snap: Json) -> Json:
        p = point(snap)
        self.points.append(p)
        return p
