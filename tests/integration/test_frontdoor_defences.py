"""Front-door defences through the real server (issue 9): CONNECT is answered 405 at the
front door and never forwarded (item 2), other HTTP major versions get 505 and are never
proxied, a crash log line is rate-limited (item 2), and ``server.hosts`` refuses a Host that
is not allowed before anything else, DNS-rebinding upgrades included (item 8)."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest
import trio

from gateway.core import frontdoor
from gateway.core.decisions import Decision
from tests.support.cli import cli
from tests.support.gateway_config import config_data, write_config
from tests.support.in_process import GatewayFactory, Running
from tests.support.raw_http import Response, new_key, raw_connection, request, upgrade_headers
from tests.support.timeouts import TIMEOUT
from tests.support.upstream import UpstreamProcess


async def exchange(gw: Running, data: bytes) -> tuple[Response, bytes | None]:
    """Send ``data``, read one response, then, if it said ``Connection: close``, whatever
    comes until the server closes (``None`` when the connection stays open)."""
    with trio.fail_after(TIMEOUT):
        async with raw_connection(gw) as client:
            await client.send(data)
            response = await client.read_response()
            if response.header("connection") != "close":
                return response, None
            try:
                rest = await client.read_until_eof()
            except trio.BrokenResourceError:
                rest = b""  # a reset is a close too
            return response, rest


def above_info(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno > logging.INFO]


# --------------------------------------------------------------------------- CONNECT


@pytest.mark.parametrize(
    "target",
    ["/healthz", "/readyz", "/", "/index.html", "/legacy/page", "/echo", "example.com:443"],
)
async def test_connect_is_405_with_allow_and_never_forwarded(
    start_gateway: GatewayFactory,
    upstream: UpstreamProcess,
    caplog: pytest.LogCaptureFixture,
    target: str,
) -> None:
    async with start_gateway({"proxy.upstream": upstream.url}) as gw:
        response, rest = await exchange(gw, request("CONNECT", target))
        stats = await upstream.stats()
    assert response.status == 405
    allow = [m.strip() for m in (response.header("allow") or "").split(",")]
    assert "GET" in allow and "CONNECT" not in allow
    assert response.header("connection") == "close" and rest == b""
    assert stats["requests"] == []
    assert above_info(caplog) == []


async def test_connect_without_a_proxy_is_405_too(
    gateway: Running, caplog: pytest.LogCaptureFixture
) -> None:
    response, _ = await exchange(gateway, request("CONNECT", "/healthz"))
    assert response.status == 405
    assert response.header("allow") == "GET, HEAD"
    assert above_info(caplog) == []


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/3.0", "HTTP/0.9", "HTTP/9.9"])
@pytest.mark.parametrize("target", ["/healthz", "/legacy/page"])
async def test_other_major_versions_are_505_and_never_proxied(
    start_gateway: GatewayFactory,
    upstream: UpstreamProcess,
    caplog: pytest.LogCaptureFixture,
    version: str,
    target: str,
) -> None:
    async with start_gateway({"proxy.upstream": upstream.url}) as gw:
        response, rest = await exchange(gw, request("GET", target, version=version))
        stats = await upstream.stats()
    assert response.status == 505
    assert response.header("connection") == "close" and rest == b""
    assert stats["requests"] == []
    assert above_info(caplog) == []


async def test_http_1_0_and_1_1_are_still_served(gateway: Running) -> None:
    for version in ("HTTP/1.0", "HTTP/1.1"):
        response, _ = await exchange(gateway, request("GET", "/healthz", version=version))
        assert response.status == 200


# --------------------------------------------------------------------------- crash log


async def test_a_crash_log_line_is_rate_limited(
    start_gateway: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug that every request can hit must not let clients flood the log."""

    def broken(*args: object, **kwargs: object) -> Decision:
        raise RuntimeError("a bug in the gateway")

    monkeypatch.setattr(frontdoor, "classify", broken)
    async with start_gateway() as gw:
        for _ in range(20):
            with trio.fail_after(TIMEOUT):
                async with raw_connection(gw) as client:
                    await client.send(request("GET", "/healthz"))
                    try:
                        assert await client.read_until_eof() == b""
                    except trio.BrokenResourceError:
                        pass
    crashes = [r for r in caplog.records if "connection handler crashed" in r.getMessage()]
    assert 1 <= len(crashes) <= 5, len(crashes)
    assert crashes[0].exc_info is not None  # the first ones keep their traceback


# --------------------------------------------------------------------------- server.hosts


def rebinding_upgrade(host: str) -> bytes:
    """What a page on a DNS-rebinding domain sends: its own name as Host and Origin."""
    return request(
        "GET",
        "/echo",
        [*upgrade_headers(new_key()), ("Origin", f"http://{host}")],
        host=host,
    )


async def test_default_hosts_on_loopback_refuse_a_rebinding_domain(
    gateway: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """config.toml listens on 127.0.0.1 only: Host must be localhost, 127.0.0.1 or [::1]."""
    for host in ("evil.test", "evil.test:8080", "127.0.0.1.evil.test"):
        response, _ = await exchange(gateway, rebinding_upgrade(host))
        assert response.status == 400, host
        response, _ = await exchange(gateway, request("GET", "/healthz", host=host))
        assert response.status == 400, host  # probes too: before anything else
    port = gateway.port
    for host in ("localhost", f"localhost:{port}", "127.0.0.1", f"127.0.0.1:{port}", "[::1]:1"):
        response, _ = await exchange(gateway, request("GET", "/healthz", host=host))
        assert response.status == 200, host
    response, _ = await exchange(gateway, rebinding_upgrade(f"localhost:{port}"))
    assert response.status == 101
    assert above_info(caplog) == []


async def test_default_hosts_on_a_public_address_allow_any(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway({"server.listen": ["0.0.0.0:8080"]}) as gw:
        response, _ = await exchange(gw, request("GET", "/healthz", host="gw.example"))
        assert response.status == 200


async def test_a_configured_hosts_list(start_gateway: GatewayFactory) -> None:
    hosts = ["gw.example", "*.apps.example"]
    async with start_gateway({"server.hosts": hosts}) as gw:
        for host, status in [
            ("gw.example", 200),
            ("GW.Example.:443", 200),
            ("a.apps.example", 200),
            ("apps.example", 400),
            ("localhost", 400),
            ("evil.test", 400),
        ]:
            response, _ = await exchange(gw, request("GET", "/healthz", host=host))
            assert response.status == status, host
    async with start_gateway({"server.hosts": ["*"]}) as gw:
        response, _ = await exchange(gw, rebinding_upgrade("evil.test"))
        # "*" says any name is ours: "same origin as Host" is all that is left, and the
        # rebinding page passes it (hence the loopback default and check's warning).
        assert response.status == 101


def check(tmp_path: Path, changes: dict[str, object]) -> subprocess.CompletedProcess[str]:
    config = write_config(tmp_path / "config.toml", config_data(changes))
    return cli("check", "--config", str(config))


def test_check_warns_when_hosts_is_unset_on_a_public_address(tmp_path: Path) -> None:
    public = check(tmp_path, {"server.listen": ["0.0.0.0:8080"]})
    assert public.returncode == 0, public.stderr
    assert "warning: server.hosts" in public.stderr
    assert "0.0.0.0:8080" in public.stderr
    loopback = check(tmp_path, {"server.listen": ["127.0.0.1:8080", "[::1]:8080"]})
    assert loopback.returncode == 0 and loopback.stderr == ""
    configured = check(tmp_path, {"server.listen": ["0.0.0.0:8080"], "server.hosts": ["a.example"]})
    assert configured.returncode == 0 and configured.stderr == ""
