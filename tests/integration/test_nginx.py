"""docs/deploy.md's nginx ``location`` block, in Debian's nginx, in front of a real gateway:
a browser-like client on https (TLS at nginx) opens a WebSocket with an ``https://`` Origin,
and the gateway checks it against the scheme and host nginx forwarded (issue 11).  The same
headers from an untrusted peer are ignored."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trustme
from websockets.asyncio.client import connect
from websockets.typing import Origin

from tests.support.docs import block
from tests.support.gateway_config import config_data
from tests.support.gateway_process import GatewayProcess
from tests.support.ports import free_port
from tests.support.raw_http import new_key, request, upgrade_headers
from tests.support.timeouts import TIMEOUT

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

pytestmark = pytest.mark.skipif(
    not Path(NGINX).exists(), reason="nginx is not installed (scripts/setup --test installs it)"
)


def nginx_conf(prefix: Path, port: int, gateway_port: int, cert: Path, key: Path) -> str:
    location = block("docs/deploy.md", "nginx").replace(
        "http://127.0.0.1:8080", f"http://127.0.0.1:{gateway_port}"
    )
    assert f"127.0.0.1:{gateway_port}" in location
    upgrade_map = block("docs/deploy.md", "nginx-http")
    temp = "\n".join(
        f"    {name}_temp_path {prefix / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
daemon off;
master_process off;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections 64; }}
http {{
    access_log off;
{temp}
{upgrade_map}
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
{location}
    }}
}}
"""


def wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"nginx exited with {process.returncode}: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nginx did not listen within {START_TIMEOUT} s: {log.read_text()}")


@pytest.fixture
def tls(tmp_path: Path) -> tuple[trustme.CA, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return ca, cert_path, key_path


@pytest.fixture
def gateway() -> Iterator[GatewayProcess]:
    changes = {
        "server.trusted_proxies": ["127.0.0.1"],
        "server.hosts": ["localhost"],
        "log.access": True,
    }
    with GatewayProcess.serve(config_data(changes)) as process:
        yield process


@pytest.fixture
def nginx(
    tmp_path: Path, gateway: GatewayProcess, tls: tuple[trustme.CA, Path, Path]
) -> Iterator[int]:
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, port, gateway.port, tls[1], tls[2]))
    check = subprocess.run(
        [NGINX, "-t", "-p", str(prefix), "-c", str(conf)],
        capture_output=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    assert check.returncode == 0, check.stderr.decode()
    process = subprocess.Popen(
        [NGINX, "-p", str(prefix), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, process, prefix / "error.log")
        yield port
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_browser_upgrade_through_tls_terminating_nginx(
    nginx: int, gateway: GatewayProcess, tls: tuple[trustme.CA, Path, Path]
) -> None:
    context = ssl.create_default_context()
    tls[0].configure_trust(context)
    origin = f"https://localhost:{nginx}"

    async def scenario() -> str:
        async with connect(
            f"wss://localhost:{nginx}/echo",
            ssl=context,
            origin=Origin(origin),
            proxy=None,
            open_timeout=TIMEOUT,
        ) as ws:
            await ws.send("through nginx")
            reply = await ws.recv()
            assert isinstance(reply, str)
            return reply

    async def bounded() -> str:
        return await asyncio.wait_for(scenario(), 20)

    assert asyncio.run(bounded()) == "through nginx"
    # The session's closed line (session.remote: the client nginx forwarded, here 127.0.0.1
    # too), and no 403 was logged.
    deadline = time.monotonic() + TIMEOUT
    while not any("] closed" in line and "path=/echo" in line for line in gateway.lines):
        assert time.monotonic() < deadline, gateway.log()
        time.sleep(0.05)
    assert not any("refused handshake" in line for line in gateway.lines), gateway.log()


async def test_forwarded_proto_from_an_untrusted_peer_is_ignored(gateway: GatewayProcess) -> None:
    # The same https Origin and X-Forwarded-Proto, straight from 127.0.0.2 (not trusted).
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", gateway.port, local_address="127.0.0.2")
        async with stream:
            headers = [
                *upgrade_headers(new_key()),
                ("Origin", f"https://localhost:{gateway.port}"),
                ("X-Forwarded-Proto", "https"),
            ]
            await stream.send_all(
                request("GET", "/echo", headers, host=f"localhost:{gateway.port}")
            )
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                data += chunk
    assert data.startswith(b"HTTP/1.1 403 "), data
    deadline = time.monotonic() + TIMEOUT
    while not any("refused handshake" in line for line in gateway.lines):
        assert time.monotonic() < deadline, gateway.log()
        await trio.sleep(0.02)
    line = next(line for line in gateway.lines if "refused handshake" in line)
    assert "status=403" in line and f"origin=https://localhost:{gateway.port}" in line
