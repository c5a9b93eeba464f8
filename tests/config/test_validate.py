"""The dataclass builder: every error names its key path and says what was expected."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from gateway.config.validate import build
from gateway.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    size: int = field(default=1, metadata={"min": 1, "max": 10})


@dataclass(frozen=True)
class Options:
    name: str
    count: int = 3
    ratio: float = 0.5
    on: bool = False
    mode: Literal["a", "b"] = "a"
    tags: tuple[str, ...] = ()
    limits: dict[str, int] = field(default_factory=dict)
    maybe: int | None = None
    inner: Inner = Inner()
    anything: Any = None


def test_builds_with_defaults_and_conversions() -> None:
    got = build(Options, {"name": "x", "ratio": 2, "tags": ["a", "b"], "limits": {"k": 1}})
    assert got == Options(name="x", ratio=2.0, tags=("a", "b"), limits={"k": 1})
    assert isinstance(got.ratio, float)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "opts.name: missing required key"),
        ({"name": "x", "nmae": 1}, "opts.nmae: unknown key (known keys: anything, count"),
        ({"name": 1}, "opts.name: expected string, got int"),
        ({"name": "x", "count": "3"}, "opts.count: expected int, got string"),
        ({"name": "x", "count": True}, "opts.count: expected int, got bool"),
        ({"name": "x", "count": 1.5}, "opts.count: expected int, got float"),
        ({"name": "x", "ratio": "1"}, "opts.ratio: expected float, got string"),
        ({"name": "x", "on": 1}, "opts.on: expected bool, got int"),
        ({"name": "x", "mode": "c"}, "opts.mode: expected one of 'a', 'b', got 'c'"),
        ({"name": "x", "tags": "a"}, "opts.tags: expected array, got string"),
        ({"name": "x", "tags": ["a", 2]}, "opts.tags[1]: expected string, got int"),
        ({"name": "x", "limits": {"k": "v"}}, "opts.limits.k: expected int, got string"),
        ({"name": "x", "maybe": "v"}, "opts.maybe: expected int, got string"),
        ({"name": "x", "inner": {"size": 0}}, "opts.inner.size: must be >= 1, got 0"),
        ({"name": "x", "inner": {"size": 11}}, "opts.inner.size: must be <= 10, got 11"),
        ({"name": "x", "inner": {"sise": 1}}, "opts.inner.sise: unknown key"),
        ({"name": "x", "inner": 3}, "opts.inner: expected table, got int"),
        ([], "opts: expected table, got array"),
    ],
)
def test_errors_name_the_key_path(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(Options, data, "opts")
    assert str(info.value).startswith(message)


def test_error_carries_path_and_problem_separately() -> None:
    with pytest.raises(ConfigError) as info:
        build(Options, {"name": "x", "count": "3"}, "plugins.chat.options")
    assert info.value.path == "plugins.chat.options.count"
    assert info.value.problem == "expected int, got string"
