"""gateway/auth/cookie.py: the signed session cookie read from a handshake's headers."""

from __future__ import annotations

import trio
import trio.lowlevel

from gateway.api import UpgradeRequest
from gateway.auth.cookie import CookieAuthenticator
from gateway.core import cookies
from tests.support.requests import upgrade_request

RING = cookies.KeyRing.parse("a-secret-of-at-least-16-bytes")
NOW = 1_700_000_000.0


def authenticator(now: float = NOW) -> CookieAuthenticator:
    return CookieAuthenticator(RING, "sid", max_age=3600, clock=lambda: now)


def with_cookie(*values: str) -> UpgradeRequest:
    return upgrade_request(*(("cookie", v) for v in values))


def test_a_valid_cookie_names_its_user() -> None:
    value = cookies.sign(RING, "ada", NOW - 10)
    principal = authenticator()(with_cookie(f"theme=dark; sid={value}"))
    assert isinstance(principal, cookies.Principal)
    assert principal.user == "ada"


def test_the_cookie_may_be_in_any_cookie_field() -> None:
    value = cookies.sign(RING, "bob", NOW)
    assert authenticator()(with_cookie("theme=dark", f"sid={value}")) is not None


def test_no_cookie_another_name_or_no_header_is_nobody() -> None:
    value = cookies.sign(RING, "ada", NOW)
    assert authenticator()(upgrade_request()) is None
    assert authenticator()(with_cookie(f"other={value}")) is None


def test_a_forged_expired_or_foreign_cookie_is_nobody() -> None:
    value = cookies.sign(RING, "ada", NOW)
    other = cookies.KeyRing.parse("another-secret-of-16-bytes!")
    assert authenticator()(with_cookie(f"sid={value[:-2]}xx")) is None
    assert authenticator(now=NOW + 3601)(with_cookie(f"sid={value}")) is None
    assert authenticator()(with_cookie(f"sid={cookies.sign(other, 'ada', NOW)}")) is None


async def test_concurrent_handshakes_share_one_authenticator_without_state() -> None:
    # One instance serves every handshake of its mount: a refusal leaves nothing behind.
    auth = authenticator()
    good = with_cookie(f"sid={cookies.sign(RING, 'ada', NOW)}")
    bad = with_cookie("sid=forged")
    results: list[object] = []

    async def check(request: UpgradeRequest) -> None:
        await trio.lowlevel.checkpoint()
        results.append(auth(request))

    async with trio.open_nursery() as nursery:
        for request in (bad, good, bad, good):
            nursery.start_soon(check, request)
    assert sorted(r is None for r in results) == [False, False, True, True]
    assert vars(auth).keys() == {"ring", "cookie_name", "max_age", "clock"}
