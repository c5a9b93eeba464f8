"""The [proxy] table: defaults, routes, and errors that name the key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.app import build
from gateway.config.load import parse
from gateway.config.schema import ProxyConfig, ProxyRoute
from gateway.core.upstream import Upstream
from gateway.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def error(proxy: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse({"proxy": proxy}, base_dir=REPO)
    return str(info.value)


def test_defaults_mean_no_proxy() -> None:
    config = parse({}, base_dir=REPO)
    assert config.proxy == ProxyConfig()
    assert (config.proxy.connect_timeout, config.proxy.read_timeout) == (5.0, 60.0)
    assert (config.proxy.max_body_size, config.proxy.pool_size) == (1024 * 1024, 32)
    assert config.proxy.preserve_host is True
    app = build(config, environ={})
    assert app.proxy is None
    assert app.policy.proxy is None


def test_a_full_proxy_table() -> None:
    config = parse(
        {
            "proxy": {
                "upstream": "http://127.0.0.1:9000/",
                "read_timeout": 5,
                "trusted_proxies": ["10.0.0.0/8", "::1"],
                "routes": [{"prefix": "/api", "upstream": "http://api.internal:81"}],
            }
        },
        base_dir=REPO,
    )
    assert config.proxy.routes == (ProxyRoute("/api", "http://api.internal:81"),)
    assert config.proxy.read_timeout == 5.0
    app = build(config, environ={})
    assert app.proxy is not None
    assert set(app.proxy.pools.pools) == {Upstream("127.0.0.1", 9000), Upstream("api.internal", 81)}
    assert app.policy.proxy is not None
    assert app.policy.proxy.match("/api/x") == Upstream("api.internal", 81)
    assert app.policy.proxy.match("/x") == Upstream("127.0.0.1", 9000)


@pytest.mark.parametrize(
    ("proxy", "message"),
    [
        ({"upstream": "https://a:1"}, "proxy.upstream: expected 'http://host:port'"),
        ({"upstream": "http://a:1/app"}, "proxy.upstream: expected 'http://host:port'"),
        ({"upstream": 8080}, "proxy.upstream: expected string"),
        ({"upstreams": "http://a:1"}, "proxy.upstreams: unknown key"),
        ({"connect_timeout": 0}, "proxy.connect_timeout: must be > 0"),
        ({"read_timeout": -1}, "proxy.read_timeout: must be >= 0"),
        ({"max_body_size": -1}, "proxy.max_body_size: must be >= 0"),
        ({"pool_size": "10"}, "proxy.pool_size: expected int"),
        ({"preserve_host": "yes"}, "proxy.preserve_host: expected bool"),
        ({"trusted_proxies": ["10.0.0.0/8", "10.0.0.1/8"]}, "proxy.trusted_proxies[1]: not an IP"),
        ({"trusted_proxies": "10.0.0.0/8"}, "proxy.trusted_proxies: expected array"),
        (
            {
                "routes": [
                    {"prefix": "/a", "upstream": "http://a:1"},
                    {"prefix": "/b", "upstream": "ftp://b:2"},
                ]
            },
            "proxy.routes[1].upstream: expected 'http://host:port'",
        ),
        (
            {"routes": [{"prefix": "a", "upstream": "http://a:1"}]},
            "proxy.routes[0].prefix: must be",
        ),
        (
            {"routes": [{"prefix": "/a?x", "upstream": "http://a:1"}]},
            "proxy.routes[0].prefix: must be",
        ),
        (
            {
                "routes": [
                    {"prefix": "/a", "upstream": "http://a:1"},
                    {"prefix": "/a", "upstream": "http://b:1"},
                ]
            },
            "proxy.routes[1].prefix: '/a' repeats proxy.routes[0]",
        ),
        ({"routes": [{"prefix": "/a"}]}, "proxy.routes[0].upstream: missing required key"),
        ({"body_timeout": 0}, "proxy.body_timeout: must be > 0"),
        ({"body_buffer_size": -1}, "proxy.body_buffer_size: must be >= 0"),
        ({"request_buffering": "on"}, "proxy.request_buffering: expected bool"),
        ({"body_temp_dir": "/no/such/dir"}, "proxy.body_temp_dir: '/no/such/dir' is not a"),
        (
            {"routes": [{"prefix": "/a", "upstream": "http://a:1", "request_buffering": 1}]},
            "proxy.routes[0].request_buffering: expected bool",
        ),
        (
            {"routes": [{"prefix": "/a", "upstream": "http://a:1", "x": 1}]},
            "proxy.routes[0].x: unknown key",
        ),
    ],
)
def test_errors_name_the_key_path(proxy: dict[str, Any], message: str) -> None:
    assert error(proxy).startswith(message)


def test_request_buffering_is_on_by_default_and_per_route() -> None:
    proxy: dict[str, Any] = {
        "upstream": "http://127.0.0.1:9000",
        "routes": [
            {"prefix": "/upload", "upstream": "http://a:1", "request_buffering": False},
            {"prefix": "/api", "upstream": "http://a:1"},
        ],
    }
    config = parse({"proxy": proxy}, base_dir=REPO)
    assert (config.proxy.request_buffering, config.proxy.body_timeout) == (True, 60.0)
    assert (config.proxy.body_buffer_size, config.proxy.body_temp_dir) == (64 * 1024, None)
    routes = build(config, environ={}).policy.proxy
    assert routes is not None
    assert routes.route("/upload/x") == (Upstream("a", 1), False)
    assert routes.route("/api/x") == (Upstream("a", 1), True)
    assert routes.route("/x") == (Upstream("127.0.0.1", 9000), True)
    # Off for the whole table: the default upstream and routes that do not say streams too.
    proxy["request_buffering"] = False
    proxy["routes"][1]["request_buffering"] = True
    routes = build(parse({"proxy": proxy}, base_dir=REPO), environ={}).policy.proxy
    assert routes is not None
    assert routes.route("/api/x") == (Upstream("a", 1), True)
    assert routes.route("/x") == (Upstream("127.0.0.1", 9000), False)
