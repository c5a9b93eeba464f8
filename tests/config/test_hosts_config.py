"""``server.hosts``: validated and normalised at load, errors name the entry; the effective
allowlist follows the listen addresses when unset (issue 9, item 8)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config.load import allowed_hosts, parse
from gateway.core.origin import LOOPBACK_HOSTS
from gateway.errors import ConfigError


def server(**values: Any) -> dict[str, Any]:
    return {"server": values}


def test_hosts_are_normalised() -> None:
    config = parse(server(hosts=["GW.Example.", "*.Apps.Example", "[::1]"]))
    assert config.server.hosts == ("gw.example", "*.apps.example", "[::1]")
    assert allowed_hosts(config.server) == config.server.hosts


@pytest.mark.parametrize(
    ("hosts", "key"),
    [
        (["gw.example", "gw.example:8080"], "server.hosts[1]"),
        (["http://gw.example"], "server.hosts[0]"),
        (["a.*.example"], "server.hosts[0]"),
        ([], "server.hosts"),
    ],
)
def test_bad_hosts_name_the_entry(hosts: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(server(hosts=hosts))
    assert str(info.value).startswith(key + ":"), str(info.value)


def test_a_star_allows_any() -> None:
    assert allowed_hosts(parse(server(hosts=["*"])).server) is None
    assert allowed_hosts(parse(server(hosts=["gw.example", "*"])).server) is None


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        (["127.0.0.1:8080"], LOOPBACK_HOSTS),
        (["127.0.0.1:8080", "[::1]:8080", "localhost:0"], LOOPBACK_HOSTS),
        (["0.0.0.0:8080"], None),
        (["[::]:8080"], None),
        (["127.0.0.1:8080", "10.1.2.3:8080"], None),
    ],
)
def test_unset_hosts_follow_the_listen_addresses(
    listen: list[str], expected: tuple[str, ...] | None
) -> None:
    assert allowed_hosts(parse(server(listen=listen)).server) == expected
