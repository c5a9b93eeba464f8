"""``auth = "upstream"``: URL and answer parsing, the cache, and the authenticator against a
scripted in-process HTTP server (real loopback sockets, no legacy site)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import h11
import pytest
import trio

from gateway.api import Address
from gateway.auth import authenticate
from gateway.auth.upstream import (
    Answer,
    TTLCache,
    UpstreamAuthenticator,
    cache_key,
    forwarded_headers,
    user_from,
)
from gateway.config.load import parse
from gateway.core.decisions import Reject
from gateway.core.upstream import AuthURL
from gateway.errors import ConfigError
from tests.support.requests import upgrade_request

# --------------------------------------------------------------------------- parsing


def test_user_from_header_first_then_json_body() -> None:
    assert user_from([(b"X-User", b"ada")], b'{"user": "bob"}', "X-User") == "ada"
    assert user_from([(b"x-user", b" ada ")], None, "X-User") == "ada"
    assert user_from([], b'{"user": "bob"}', "X-User") == "bob"
    assert user_from([(b"x-remote-user", b"cy")], None, "X-Remote-User") == "cy"


@pytest.mark.parametrize(
    "body", [None, b"", b"not json", b"[1]", b'{"user": null}', b'{"user": ""}', b'{"user": 7}']
)
def test_user_from_without_a_user_is_none(body: bytes | None) -> None:
    assert user_from([(b"x-other", b"ada")], body, "X-User") is None


def test_forwarded_for_is_the_client_address_without_its_port() -> None:
    url = AuthURL.parse("http://127.0.0.1:9000/whoami")

    def forwarded_for(remote: Address | None) -> list[bytes]:
        headers = forwarded_headers(upgrade_request(remote=remote), url, "http")
        return [v for n, v in headers if n == b"x-forwarded-for"]

    assert forwarded_for(Address("10.0.0.7", 5555)) == [b"10.0.0.7"]
    assert forwarded_for(Address("::1", 5555)) == [b"::1"]
    # session.remote of a client behind a trusted proxy: the forwarded address, no port
    assert forwarded_for(Address("203.0.113.7")) == [b"203.0.113.7"]
    assert forwarded_for(None) == []  # no address known: no header rather than a made-up one


def test_cache_key_depends_on_cookie_and_authorization_only() -> None:
    a = cache_key(upgrade_request(("cookie", "s=1")))
    assert a == cache_key(upgrade_request(("cookie", "s=1"), ("origin", "http://x")))
    assert a != cache_key(upgrade_request(("cookie", "s=2")))
    assert a != cache_key(upgrade_request(("authorization", "s=1")))
    assert a != cache_key(upgrade_request(("cookie", "s=1"), ("authorization", "Bearer t")))
    assert len(a) == 32  # a digest, whatever the size of the cookie


# --------------------------------------------------------------------------- the cache


def test_cache_entries_expire_after_ttl() -> None:
    cache = TTLCache(ttl=5.0)
    cache.put(b"k", Answer(200, "ada"), now=100.0)
    assert cache.get(b"k", now=104.9) == Answer(200, "ada")
    assert cache.get(b"k", now=105.0) is None
    assert len(cache) == 0


def test_cache_with_zero_ttl_stores_nothing() -> None:
    cache = TTLCache(ttl=0.0)
    cache.put(b"k", Answer(200, "ada"), now=0.0)
    assert cache.get(b"k", now=0.0) is None


def test_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    cache = TTLCache(ttl=60.0, max_entries=3)
    for key in (b"a", b"b", b"c"):
        cache.put(key, Answer(200, key.decode()), now=0.0)
    assert cache.get(b"a", now=1.0) is not None  # a is now the most recently used
    cache.put(b"d", Answer(200, "d"), now=1.0)
    assert len(cache) == 3
    assert cache.get(b"b", now=1.0) is None
    assert [cache.get(k, now=1.0) is not None for k in (b"a", b"c", b"d")] == [True] * 3


# --------------------------------------------------------------------------- config


def mount(**keys: object) -> dict[str, object]:
    return {"plugins": {"live": {"path": "/live", "use": "plugins.echo:echo", **keys}}}


def test_config_accepts_upstream_auth_with_defaults() -> None:
    config = parse(mount(auth="upstream", auth_url="http://127.0.0.1:9000/api/whoami"))
    ws = config.plugins[0].websocket
    assert (ws.auth, ws.auth_user_header, ws.auth_cache_ttl) == ("upstream", "X-User", 0.0)


@pytest.mark.parametrize(
    ("keys", "path", "problem"),
    [
        ({"auth": "upstream"}, "plugins.live.auth_url", "required"),
        (
            {"auth": "upstream", "auth_url": "https://legacy/whoami"},
            "plugins.live.auth_url",
            "http://",
        ),
        (
            {"auth": "upstream", "auth_url": "http://l/w", "authenticator": "m:f"},
            "plugins.live.authenticator",
            "cannot be combined",
        ),
        (
            {"auth": "upstream", "auth_url": "http://l/w", "auth_user_header": "X User"},
            "plugins.live.auth_user_header",
            "header name",
        ),
        (
            {"auth": "upstream", "auth_url": "http://l/w", "auth_cache_ttl": -1},
            "plugins.live.auth_cache_ttl",
            ">= 0",
        ),
        ({"auth": "upstream", "auth_url": 7}, "plugins.live.auth_url", "expected string"),
    ],
)
def test_config_errors_name_the_key(keys: dict[str, object], path: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(mount(**keys))
    assert info.value.path == path
    assert problem in info.value.problem


def test_config_checks_the_websocket_defaults_table_too() -> None:
    with pytest.raises(ConfigError) as info:
        parse({"websocket": {"auth": "upstream"}})
    assert info.value.path == "websocket.auth_url"


# --------------------------------------------------------------------------- against a server


@dataclass
class Scripted:
    """An HTTP server on 127.0.0.1 answering every request with ``reply`` (raw bytes, or
    ``None`` to never answer); it records each request's headers."""

    reply: bytes | None
    port: int = 0
    requests: list[list[tuple[bytes, bytes]]] = field(default_factory=list)
    targets: list[bytes] = field(default_factory=list)

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                self.requests.append(list(event.headers))
                self.targets.append(event.target)
                break
        if self.reply is None:
            await trio.sleep_forever()
        await stream.send_all(self.reply)
        await stream.aclose()

    def authenticator(self, **kwargs: object) -> UpstreamAuthenticator:
        url = AuthURL.parse(f"http://127.0.0.1:{self.port}/whoami?q=1")
        return UpstreamAuthenticator(url, **kwargs)  # type: ignore[arg-type]


@asynccontextmanager
async def scripted(reply: bytes | None) -> AsyncIterator[Scripted]:
    server = Scripted(reply)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


def reply(status: int, headers: str = "", body: bytes = b"") -> bytes:
    reason = {200: "OK", 204: "No Content", 302: "Found", 401: "Unauthorized"}.get(status, "X")
    head = f"HTTP/1.1 {status} {reason}\r\n{headers}Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def test_forwards_only_cookie_authorization_host_and_forwarded_headers() -> None:
    async with scripted(reply(200, "X-User: ada\r\n")) as server:
        auth = server.authenticator(proto="https")
        request = upgrade_request(
            ("cookie", "s=1"),
            ("authorization", "Bearer t"),
            ("origin", "http://gateway.test"),
            ("x-forwarded-for", "6.6.6.6"),
            ("sec-websocket-key", "abc"),
        )
        with trio.fail_after(10):
            assert await auth(request) == "ada"
    assert server.targets == [b"/whoami?q=1"]
    assert server.requests[0] == [
        (b"host", f"127.0.0.1:{server.port}".encode()),
        (b"cookie", b"s=1"),
        (b"authorization", b"Bearer t"),
        (b"x-forwarded-for", b"10.0.0.7"),
        (b"x-forwarded-proto", b"https"),
        (b"connection", b"close"),
    ]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (reply(200, "X-User: ada\r\n"), "ada"),
        (reply(204, "X-User: ada\r\n"), "ada"),
        (reply(200, "Content-Type: application/json\r\n", b'{"user": "bob"}'), "bob"),
        (reply(401), Reject(401, "authentication required")),
        (reply(403), Reject(403, "forbidden")),
        (reply(200), Reject(503, "authentication service unavailable")),  # no user named
        (reply(302, "Location: /login\r\n"), Reject(503, "authentication service unavailable")),
        (reply(500), Reject(503, "authentication service unavailable")),
        (b"garbage\r\n\r\n", Reject(503, "authentication service unavailable")),
        (b"", Reject(503, "authentication service unavailable")),
    ],
)
async def test_the_answer_decides(answer: bytes, expected: object) -> None:
    async with scripted(answer) as server:
        with trio.fail_after(10):
            assert await server.authenticator()(upgrade_request()) == expected


async def test_a_silent_auth_service_is_503_after_the_timeout() -> None:
    async with scripted(None) as server:
        with trio.fail_after(10):
            result = await server.authenticator(timeout=0.2)(upgrade_request())
    assert result == Reject(503, "authentication service unavailable")


async def test_an_unreachable_auth_service_is_503() -> None:
    async with scripted(b"") as server:
        port = server.port
    auth = UpstreamAuthenticator(AuthURL.parse(f"http://127.0.0.1:{port}/whoami"))
    with trio.fail_after(10):
        assert await auth(upgrade_request()) == Reject(503, "authentication service unavailable")


async def test_answers_are_cached_per_credentials_for_the_ttl() -> None:
    now = [0.0]
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731
    async with scripted(reply(200, "X-User: ada\r\n")) as server:
        auth = server.authenticator(cache_ttl=5.0, clock=clock)
        with trio.fail_after(10):
            for _ in range(3):
                assert await auth(upgrade_request(("cookie", "s=1"))) == "ada"
            assert len(server.requests) == 1
            assert await auth(upgrade_request(("cookie", "s=2"))) == "ada"
            assert len(server.requests) == 2
            now[0] = 5.0
            assert await auth(upgrade_request(("cookie", "s=1"))) == "ada"
            assert len(server.requests) == 3


async def test_refusals_are_cached_but_failures_are_not() -> None:
    async with scripted(reply(401)) as server:
        auth = server.authenticator(cache_ttl=60.0)
        with trio.fail_after(10):
            for _ in range(2):
                assert await auth(upgrade_request()) == Reject(401, "authentication required")
        assert len(server.requests) == 1
    async with scripted(reply(500)) as server:
        auth = server.authenticator(cache_ttl=60.0)
        with trio.fail_after(10):
            for _ in range(2):
                assert (await auth(upgrade_request())).status == 503  # type: ignore[union-attr]
        assert len(server.requests) == 2


async def test_authenticate_in_upstream_mode_fails_closed() -> None:
    assert await authenticate("upstream", None, upgrade_request()) == Reject(
        401, "authentication required"
    )
    assert await authenticate("upstream", lambda r: None, upgrade_request()) == Reject(
        401, "authentication required"
    )
