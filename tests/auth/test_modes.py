"""gateway/auth/__init__.py: what a mount's ``auth`` mode makes of its authenticator's answer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.api import UpgradeRequest
from gateway.auth import UNAUTHORIZED, authenticate, principal_user
from gateway.core.decisions import Reject
from tests.support.requests import upgrade_request

REQUEST = upgrade_request()
TEAPOT = Reject(403, "not you")


def answering(value: object) -> Any:
    def authenticator(request: UpgradeRequest) -> object:
        assert request is REQUEST
        return value

    return authenticator


def answering_later(value: object) -> Any:
    async def authenticator(request: UpgradeRequest) -> object:
        return value

    return authenticator


@pytest.mark.parametrize("make", [answering, answering_later])
@pytest.mark.parametrize(
    ("mode", "answer", "expected"),
    [
        ("required", "ada", "ada"),
        ("required", None, UNAUTHORIZED),
        ("required", TEAPOT, TEAPOT),
        ("upstream", None, UNAUTHORIZED),
        ("optional", None, None),
        ("optional", "ada", "ada"),
        ("optional", TEAPOT, TEAPOT),
        ("none", "ada", None),  # never asked
    ],
)
async def test_the_mode_decides_what_nobody_gets(
    make: Any, mode: str, answer: object, expected: object
) -> None:
    assert await authenticate(mode, make(answer), REQUEST) == expected


@pytest.mark.parametrize(("mode", "expected"), [("required", UNAUTHORIZED), ("optional", None)])
async def test_without_an_authenticator_only_optional_lets_through(
    mode: str, expected: object
) -> None:
    assert await authenticate(mode, None, REQUEST) == expected


@dataclass
class WithUser:
    user: object


@pytest.mark.parametrize(
    ("principal", "user"),
    [
        ("ada", "ada"),
        ("", None),
        (None, None),
        (WithUser("bob"), "bob"),
        (WithUser(7), None),
        ({"user": "eve"}, "eve"),
        ({"user": ""}, None),
        ({"name": "eve"}, None),
        (42, None),
    ],
)
def test_principal_user(principal: object, user: str | None) -> None:
    assert principal_user(principal) == user


def test_a_mapping_principal_is_read_as_a_mapping() -> None:
    class Odd(Mapping[str, str]):
        user = "attribute"

        def __getitem__(self, key: str) -> str:
            return {"user": "item"}[key]

        def __iter__(self) -> Any:
            return iter(["user"])

        def __len__(self) -> int:
            return 1

    assert principal_user(Odd()) == "item"
