"""``[broker]``: the Redis URL, the password's one place, the prefix, bounds; errors name the
key path and never echo a password."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config.load import parse
from gateway.config.schema import BrokerConfig
from gateway.errors import ConfigError


def broker(**table: Any) -> BrokerConfig | None:
    return parse({"broker": table}).broker


def error(**table: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse({"broker": table})
    return str(info.value)


def test_no_broker_table_means_in_process_only() -> None:
    assert parse({}).broker is None


def test_defaults() -> None:
    config = broker(url="redis://127.0.0.1:6379/0")
    assert config == BrokerConfig(url="redis://127.0.0.1:6379/0")
    assert config.prefix == "gateway"
    assert config.required is False
    assert config.publish_queue == 10_000


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost",
        "redis://127.0.0.1:6380",
        "redis://[::1]:6379/3",
        "rediss://user:secret@redis.example:6380/0",
        "redis://:secret@h/15",
    ],
)
def test_valid_urls(url: str) -> None:
    config = broker(url=url)
    assert config is not None
    assert config.url == url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://h:6379", "must start with redis:// or rediss://"),
        ("h:6379", "must start with redis:// or rediss://"),
        ("redis://", "needs a host"),
        ("redis://h:0", "port must be 1-65535"),
        ("redis://h:70000", "not a URL"),
        ("redis://h:port", "not a URL"),
        ("redis://h/db1", "the path is the database number"),
        ("redis://h/0?ssl=1", "takes no query"),
    ],
)
def test_bad_urls_name_the_key(url: str, problem: str) -> None:
    message = error(url=url)
    assert message.startswith("broker.url: ")
    assert problem in message


def test_a_password_is_never_echoed() -> None:
    message = error(url="http://user:hunter2@h:6379")
    assert "hunter2" not in message
    message = error(url="redis://user:hunter2@:6379")
    assert "hunter2" not in message
    assert message == "broker.url: needs a host"


def test_password_in_one_place_only() -> None:
    assert error(url="redis://:pw@h", password_env="REDIS_PASSWORD").startswith(
        "broker.password_env: the URL has a password too"
    )
    assert error(url="redis://h", password_env="not a name").startswith(
        "broker.password_env: not an environment variable name"
    )
    config = broker(url="redis://h", password_env="REDIS_PASSWORD")
    assert config is not None
    assert config.password_env == "REDIS_PASSWORD"


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({}, "broker.url: missing required key"),
        ({"url": 6379}, "broker.url: expected string, got int"),
        ({"url": "redis://h", "prefix": "a b"}, "broker.prefix: 1-64 letters"),
        ({"url": "redis://h", "prefix": ""}, "broker.prefix: 1-64 letters"),
        ({"url": "redis://h", "required": "yes"}, "broker.required: expected bool"),
        ({"url": "redis://h", "publish_queue": 0}, "broker.publish_queue: must be >= 1"),
        ({"url": "redis://h", "timeout": 0}, "broker.timeout: must be > 0"),
        ({"url": "redis://h", "connect_timeout": 0}, "broker.connect_timeout: must be > 0"),
        ({"url": "redis://h", "retry_max_delay": 0}, "broker.retry_max_delay: must be > 0"),
        ({"url": "redis://h", "node_ttl": 0.5}, "broker.node_ttl: must be >= 1"),
        ({"url": "redis://h", "channels": 3}, "broker.channels: unknown key"),
    ],
)
def test_errors_name_the_key_path(table: dict[str, Any], expected: str) -> None:
    assert error(**table).startswith(expected)


def test_broker_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=r"^broker: expected table"):
        parse({"broker": "redis://h"})


@pytest.mark.parametrize("node", ["node-a", "node-b"])
def test_the_cluster_example_configs_load(node: str) -> None:
    from pathlib import Path

    from gateway.config.load import load_file

    path = Path(__file__).resolve().parents[2] / "examples" / "cluster" / f"{node}.toml"
    config = load_file(path)
    assert config.broker is not None
    assert config.broker.prefix == "cluster-example"
