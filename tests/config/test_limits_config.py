"""``[limits]`` and ``server.trusted_proxies``: defaults, key-path errors, what the server
builds from them (gateway/config/load.py, gateway/client_limits.py)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from gateway.client_limits import ClientLimits, workers
from gateway.config.load import parse
from gateway.config.schema import Config, LimitsConfig
from gateway.core.limiter import Rate
from gateway.errors import ConfigError


def error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data)
    return str(info.value)


def test_defaults() -> None:
    limits = parse({}).limits
    assert limits == LimitsConfig()
    assert (limits.connections_per_client, limits.handshakes_per_second) == (256, 20.0)
    assert (limits.handshake_burst, limits.requests_per_second) == (40, 0.0)
    assert (limits.ipv6_prefix, limits.table_size) == (64, 10_000)
    settings = ClientLimits.from_config(Config()).limiter.settings
    assert settings.connections == 256
    assert settings.handshakes == Rate(20.0, 40)
    assert not settings.requests.on


def test_a_full_table_loads() -> None:
    config = parse(
        {
            "server": {"trusted_proxies": ["10.0.0.0/8", "::1"]},
            "limits": {
                "connections_per_client": 0,
                "handshakes_per_second": 5,
                "handshake_burst": 10,
                "requests_per_second": 50.5,
                "request_burst": 200,
                "ipv6_prefix": 56,
                "table_size": 500,
            },
        }
    )
    assert config.server.trusted_proxies == ("10.0.0.0/8", "::1")
    assert config.limits.handshakes_per_second == 5.0
    settings = ClientLimits.from_config(config).limiter.settings
    assert settings.connections == 0
    assert settings.requests == Rate(50.5, 200)
    assert (settings.ipv6_prefix, settings.table_size) == (56, 500)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"limits": {"connection_per_client": 5}}, "limits.connection_per_client: unknown key"),
        ({"limits": {"connections_per_client": -1}}, "limits.connections_per_client: must be >= 0"),
        (
            {"limits": {"connections_per_client": 1.5}},
            "limits.connections_per_client: expected int",
        ),
        (
            {"limits": {"handshakes_per_second": "20"}},
            "limits.handshakes_per_second: expected float",
        ),
        ({"limits": {"handshakes_per_second": -1}}, "limits.handshakes_per_second: must be >= 0"),
        ({"limits": {"handshake_burst": 0}}, "limits.handshake_burst: must be >= 1"),
        ({"limits": {"requests_per_second": -0.5}}, "limits.requests_per_second: must be >= 0"),
        ({"limits": {"request_burst": 0}}, "limits.request_burst: must be >= 1"),
        ({"limits": {"ipv6_prefix": 129}}, "limits.ipv6_prefix: must be <= 128"),
        ({"limits": {"ipv6_prefix": 8}}, "limits.ipv6_prefix: must be >= 16"),
        ({"limits": {"table_size": 0}}, "limits.table_size: must be >= 1"),
        ({"limits": 5}, "limits: expected table"),
        ({"server": {"trusted_proxies": "10.0.0.0/8"}}, "server.trusted_proxies: expected array"),
        (
            {"server": {"trusted_proxies": ["10.0.0.0/8", "10.0.0.1/8"]}},
            "server.trusted_proxies[1]: not an IP",
        ),
        ({"server": {"trusted_proxies": ["proxy.local"]}}, "server.trusted_proxies[0]: not an IP"),
    ],
)
def test_errors_name_the_key(data: dict[str, Any], message: str) -> None:
    assert error(data).startswith(message)


def test_both_trusted_lists_are_one() -> None:
    config = parse(
        {
            "server": {"trusted_proxies": ["10.0.0.0/8"]},
            "proxy": {"upstream": "http://127.0.0.1:9", "trusted_proxies": ["192.0.2.1"]},
        }
    )
    assert (
        config.trusted_networks
        == ClientLimits.from_config(config).trusted
        == (
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("192.0.2.1/32"),
        )
    )


def test_each_worker_enforces_its_share() -> None:
    config = parse(
        {
            "server": {"workers": 4},
            "broker": {"url": "redis://127.0.0.1:6379"},
            "limits": {"connections_per_client": 256, "handshakes_per_second": 20},
        }
    )
    assert workers(config) == 4
    settings = ClientLimits.from_config(config).limiter.settings
    assert settings.connections == 64
    assert settings.handshakes == Rate(5.0, 10)
