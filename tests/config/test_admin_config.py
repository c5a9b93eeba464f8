"""``[admin]``: off without the table; ``listen`` parses and is never a public address."""

from __future__ import annotations

import pytest

from gateway.config.load import parse
from gateway.errors import ConfigError


def test_absent_means_off() -> None:
    assert parse({}).admin is None


def test_listen() -> None:
    config = parse({"admin": {"listen": "127.0.0.1:9090"}})
    assert config.admin is not None
    assert config.admin.listen == "127.0.0.1:9090"


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"admin": {}}, "admin.listen", "missing"),
        ({"admin": {"listen": "9090"}}, "admin.listen", "host:port"),
        ({"admin": {"listen": "127.0.0.1:9090", "port": 1}}, "admin.port", "unknown key"),
        (
            {"server": {"listen": ["127.0.0.1:8080"]}, "admin": {"listen": "127.0.0.1:8080"}},
            "admin.listen",
            "server.listen[0]",
        ),
        (
            {"server": {"listen": ["0.0.0.0:8080"]}, "admin": {"listen": "127.0.0.1:8080"}},
            "admin.listen",
            "an address of its own",
        ),
    ],
)
def test_errors_name_the_key(data: dict[str, object], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(data)
    assert error.value.path == key
    assert problem in str(error.value)


def test_port_zero_and_other_ports_are_fine() -> None:
    server = {"listen": ["127.0.0.1:8080"]}
    assert parse({"server": server, "admin": {"listen": "127.0.0.1:0"}}).admin is not None
    assert parse({"server": server, "admin": {"listen": "127.0.0.1:8081"}}).admin is not None
