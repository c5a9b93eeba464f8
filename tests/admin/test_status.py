"""The status page's numbers come from metric families: one process's, or the supervisor's
merge of every worker's (summed over the ``worker`` label)."""

from __future__ import annotations

from prometheus_client.exposition import generate_latest

from gateway.admin.collector import GatewayCollector, buckets
from gateway.admin.status import History, point, snapshot
from gateway.admin.workers import merge
from gateway.app import App, build
from gateway.config.load import parse
from gateway.core.histogram import Histogram


def app_with_traffic() -> App:
    config = parse(
        {
            "admin": {"listen": "127.0.0.1:0"},
            "plugins": {"echo": {"path": "/echo", "use": "plugins.echo:echo"}},
            "proxy": {
                "upstream": "http://127.0.0.1:9",
                "routes": [{"prefix": "/api", "upstream": "http://127.0.0.1:9"}],
            },
        }
    )
    app = build(config, environ={})
    mount = app.mounts["echo"].mount
    mount.handshakes[101] += 3
    mount.handshakes[403] += 1
    mount.messages_in, mount.messages_out = 10, 12
    mount.closes[1000] += 2
    route = app.stats.route("/api")
    route.statuses[200] += 2
    route.latency.observe(0.004)
    route.latency.observe(0.02)
    app.stats.http["static", 200] += 5
    return app


def test_snapshot_of_one_process() -> None:
    app = app_with_traffic()
    snap = snapshot(GatewayCollector(app).collect(), 100.0)
    echo = snap["mounts"]["echo"]
    assert echo["path"] == "/echo"
    assert (echo["clients"], echo["received"], echo["sent"]) == (0, 10, 12)
    assert echo["handshakes"] == {"101": 3, "403": 1}
    assert echo["closes"] == {"1000": 2}
    api = snap["routes"]["/api"]
    assert (api["requests"], api["count"]) == (2, 2)
    assert api["sum"] == sum((0.004, 0.02))
    assert snap["http"] == {"static 200": 5}
    assert snap["workers"] == []
    expected = {"t": 100.0, "m": {"echo": [0, 10, 12]}, "r": {"/api": [2, api["sum"], 2]}}
    assert point(snap) == expected


def test_workers_are_summed_and_listed() -> None:
    text = generate_latest(GatewayCollector(app_with_traffic())).decode()
    merged = merge({1: text, 2: text, 3: None})
    snap = snapshot(merged, 1.0)
    assert (snap["workers"], snap["workers_up"]) == (["1", "2", "3"], 2)
    echo = snap["mounts"]["echo"]
    assert (echo["received"], echo["handshakes"]["101"]) == (20, 6)
    assert snap["routes"]["/api"]["count"] == 4
    ups = [s for f in merged for s in f.samples if s.name == "gateway_worker_up"]
    up = {s.labels["worker"]: s.value for s in ups}
    assert up == {"1": 1, "2": 1, "3": 0}


def test_history_keeps_the_last_points() -> None:
    history = History(size=3)
    for t in range(5):
        history.add({"t": float(t), "mounts": {}, "routes": {}})
    assert [p["t"] for p in history.points] == [2.0, 3.0, 4.0]


def test_histogram_buckets_render_cumulative() -> None:
    h = Histogram((0.01, 0.1))
    h.observe(0.05)
    assert buckets(h) == [("0.01", 0.0), ("0.1", 1.0), ("+Inf", 1.0)]
