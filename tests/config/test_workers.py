"""``server.workers``: its values, and the rule that more than one worker needs ``[broker]``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from gateway.config.load import check_workers, parse
from gateway.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
BROKER = {"url": "redis://127.0.0.1:6379/0"}


def error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data, base_dir=REPO)
    return str(info.value)


def test_one_worker_by_default() -> None:
    assert parse({}).server.workers == 1


@pytest.mark.parametrize("workers", [1, 2, 16, "auto"])
def test_workers_with_a_broker(workers: object) -> None:
    config = parse({"server": {"workers": workers}, "broker": BROKER})
    assert config.server.workers == workers


def test_one_worker_needs_no_broker() -> None:
    assert parse({"server": {"workers": 1}}).broker is None


@pytest.mark.parametrize("workers", [2, "auto"])
def test_more_than_one_worker_without_a_broker_is_refused(workers: object) -> None:
    message = error({"server": {"workers": workers}})
    assert message.startswith("server.workers: ")
    assert "[broker]" in message
    assert "silently reach only the clients of the worker" in message


@pytest.mark.parametrize(
    ("workers", "message"),
    [
        (0, "server.workers: must be >= 1, got 0"),
        (-1, "server.workers: must be >= 1, got -1"),
        ("many", "server.workers: expected int, got string or expected one of 'auto', got 'many'"),
        (2.0, "server.workers: expected int, got float or expected one of 'auto', got 2.0"),
        (True, "server.workers: expected int, got bool or expected one of 'auto', got True"),
    ],
)
def test_bad_worker_counts_name_the_key(workers: object, message: str) -> None:
    assert error({"server": {"workers": workers}, "broker": BROKER}) == message


def test_check_workers_names_the_key_it_is_given() -> None:
    # The command line's --workers overrides the file: its error names --workers.
    config = parse({})
    config = dataclasses.replace(config, server=dataclasses.replace(config.server, workers=3))
    with pytest.raises(ConfigError) as info:
        check_workers(config, "--workers")
    assert str(info.value).startswith("--workers: 3 workers need a [broker] table")
