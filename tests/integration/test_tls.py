"""TLS (``[server.tls]``) over real sockets: a trustme CA signs a certificate for
``localhost``/``127.0.0.1``, the in-process gateway serves ``https://`` and ``wss://`` with it,
and independent clients (a bare ``trio.SSLStream``, trio-websocket, ``websockets`` in a thread)
verify it.  Also: Origin checks use the ``https`` scheme, and clients that never speak TLS or
speak plaintext cost one connection, not the server."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio_websocket
import trustme
from trio_websocket import Endpoint
from websockets.sync.client import connect as sync_connect

from tests.support.in_process import GatewayFactory, Running, wait_until
from tests.support.raw_http import new_key, raw_connection, request, upgrade_headers
from tests.support.timeouts import TIMEOUT

# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Certs:
    ca: trustme.CA
    cert: Path  # the server's PEM chain
    key: Path  # its PEM private key

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only our CA (and verifies the host name)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        context.set_alpn_protocols(["http/1.1"])
        return context

    def changes(self, extra: dict[str, object] | None = None) -> dict[str, object]:
        return {"server.tls.cert": str(self.cert), "server.tls.key": str(self.key), **(extra or {})}


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    # The listener is bound to 127.0.0.1 and clients connect to "localhost" (so that host
    # name verification runs): the name must reach the listener.
    resolved = {info[4][0] for info in socket.getaddrinfo("localhost", None, socket.AF_INET)}
    if "127.0.0.1" not in resolved:
        pytest.skip(f"localhost resolves to {sorted(resolved)}, not 127.0.0.1")
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert = tmp_path / "server.pem"
    key = tmp_path / "server.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return Certs(ca, cert, key)


# --------------------------------------------------------------------------- TLS clients


@asynccontextmanager
async def tls_connection(
    running: Running, context: ssl.SSLContext
) -> AsyncIterator[trio.SSLStream[trio.SocketStream]]:
    """TCP to the listener (127.0.0.1), TLS for the name ``localhost``, handshake done."""
    tcp = await trio.open_tcp_stream(running.host, running.port)
    stream = trio.SSLStream(tcp, context, server_hostname="localhost", https_compatible=True)
    async with stream:
        await stream.do_handshake()
        yield stream


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_reply(stream: trio.abc.ReceiveStream) -> Reply:
    """One response with a Content-Length body (all the gateway sends)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        assert data, f"EOF before a complete response head: {buffer!r}"
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 "), status_line
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        data = await stream.receive_some(65536)
        assert data, "EOF inside the body"
        rest += data
    return Reply(int(status_line.split(" ")[1]), headers, rest[:length])


async def https_get(running: Running, context: ssl.SSLContext, target: str) -> Reply:
    async with tls_connection(running, context) as stream:
        assert stream.selected_alpn_protocol() == "http/1.1"
        await stream.send_all(request("GET", target, host=f"localhost:{running.port}"))
        return await read_reply(stream)


@asynccontextmanager
async def wss(
    running: Running, path: str, context: ssl.SSLContext, origin: str | None = None
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    headers = [(b"Origin", origin.encode())] if origin else None
    async with trio_websocket.open_websocket_url(
        f"wss://localhost:{running.port}{path}",
        ssl_context=context,
        extra_headers=headers,
        connect_timeout=TIMEOUT,
        disconnect_timeout=TIMEOUT,
    ) as ws:
        try:
            yield ws
        finally:
            if ws.closed is not None:
                # trio-websocket 0.12.2 leaks its stream when the server closed first.
                await ws._stream.aclose()


def gateway_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("gateway") and r.levelno >= logging.ERROR
    ]


# --------------------------------------------------------------------------- tests


async def test_https_url_and_health_over_tls(
    start_gateway: GatewayFactory, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    with trio.fail_after(TIMEOUT):
        async with start_gateway(certs.changes()) as gw:
            assert gw.url == f"https://127.0.0.1:{gw.port}"
            assert f"listening on https://127.0.0.1:{gw.port}" in caplog.messages
            reply = await https_get(gw, certs.client_context(), "/healthz")
            assert (reply.status, reply.body) == (200, b"ok\n")
            ready = await https_get(gw, certs.client_context(), "/readyz")
            assert ready.status == 200
            # The certificate really is checked: a client that does not trust our CA fails.
            with pytest.raises(trio.BrokenResourceError) as info:
                async with tls_connection(gw, ssl.create_default_context()):
                    pass
            assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
            # ... and costs the server nothing.
            assert (await https_get(gw, certs.client_context(), "/healthz")).status == 200
    assert gateway_errors(caplog) == []


async def test_wss_echo_with_trio_websocket(start_gateway: GatewayFactory, certs: Certs) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            start_gateway(certs.changes()) as gw,
            wss(gw, "/echo", certs.client_context()) as ws,
        ):
            await ws.send_message("über TLS ✓")
            assert await ws.get_message() == "über TLS ✓"
            payload = bytes(range(256)) * 300  # several TLS records
            await ws.send_message(payload)
            assert await ws.get_message() == payload
            (server_ws,) = gw.app.mounts["echo"].mount.clients
            assert isinstance(server_ws.remote, Endpoint)
            assert server_ws.remote.is_ssl


async def test_wss_echo_with_websockets_in_a_thread(
    start_gateway: GatewayFactory, certs: Certs
) -> None:
    context = certs.client_context()

    def client(url: str) -> tuple[str | bytes, str | bytes, int | None]:
        with sync_connect(
            url,
            ssl=context,
            proxy=None,
            compression=None,
            open_timeout=TIMEOUT,
            close_timeout=TIMEOUT,
        ) as ws:
            ws.send("héllo")
            text = ws.recv(timeout=TIMEOUT)
            ws.send(b"\x00\xff" * 40_000)
            binary = ws.recv(timeout=TIMEOUT)
            status = ws.response.status_code if ws.response is not None else None
        return text, binary, status

    with trio.fail_after(TIMEOUT + 5):
        async with start_gateway(certs.changes()) as gw:
            text, binary, status = await trio.to_thread.run_sync(
                client, f"wss://localhost:{gw.port}/echo", abandon_on_cancel=True
            )
            assert (text, binary, status) == ("héllo", b"\x00\xff" * 40_000, 101)


async def test_origin_check_uses_https_scheme(start_gateway: GatewayFactory, certs: Certs) -> None:
    context = certs.client_context()
    with trio.fail_after(TIMEOUT):
        async with start_gateway(certs.changes()) as gw:
            same = f"https://localhost:{gw.port}"
            async with wss(gw, "/echo", context, origin=same) as ws:
                await ws.send_message("same origin")
                assert await ws.get_message() == "same origin"
            # A page served over http:// is another origin than the wss:// endpoint.
            for origin in (f"http://localhost:{gw.port}", f"https://localhost:{gw.port + 1}"):
                async with tls_connection(gw, context) as stream:
                    headers = [*upgrade_headers(new_key()), ("Origin", origin)]
                    await stream.send_all(
                        request("GET", "/echo", headers, host=f"localhost:{gw.port}")
                    )
                    reply = await read_reply(stream)
                    assert (reply.status, reply.body) == (403, b"origin not allowed\n"), origin
            echo = gw.app.mounts["echo"].mount
            await wait_until(lambda: len(echo) == 0, "no WebSocket left open")


async def test_client_that_never_starts_tls_is_closed_at_head_timeout(
    start_gateway: GatewayFactory, certs: Certs
) -> None:
    head_timeout = 0.5
    with trio.fail_after(TIMEOUT):
        async with start_gateway(certs.changes({"http.head_timeout": head_timeout})) as gw:
            async with raw_connection(gw) as silent:
                started = trio.current_time()
                assert await silent.read_until_eof() == b""  # not a byte, not even an alert
                elapsed = trio.current_time() - started
            assert head_timeout - 0.1 < elapsed < head_timeout + 1.0, elapsed
            # A client that finishes the TLS handshake and then sends nothing: the same.
            async with tls_connection(gw, certs.client_context()) as idle:
                started = trio.current_time()
                assert await idle.receive_some(1024) == b""
                elapsed = trio.current_time() - started
            assert elapsed < head_timeout + 1.0, elapsed
            await wait_until(lambda: gw.app.connections == 0, "both connections closed")
            reply = await https_get(gw, certs.client_context(), "/healthz")
            assert reply.status == 200


async def test_plaintext_request_to_tls_port_gets_no_http_response(
    start_gateway: GatewayFactory, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT):
        async with start_gateway(certs.changes()) as gw:
            for attempt in (
                request("GET", "/healthz"),
                request("GET", "/echo", upgrade_headers(new_key())),
            ):
                async with raw_connection(gw) as plain:
                    await plain.send(attempt)
                    try:
                        answer = await plain.read_until_eof()
                    except trio.BrokenResourceError:
                        answer = b""  # reset: no response either
                    assert not answer.startswith(b"HTTP/"), answer
                    assert b"200 OK" not in answer
            await wait_until(lambda: gw.app.connections == 0, "the plaintext connections closed")
            # The next TLS client is served as usual.
            reply = await https_get(gw, certs.client_context(), "/healthz")
            assert (reply.status, reply.body) == (200, b"ok\n")
            async with wss(gw, "/echo", certs.client_context()) as ws:
                await ws.send_message("still fine")
                assert await ws.get_message() == "still fine"
    assert gateway_errors(caplog) == []


async def test_over_capacity_tls_client_gets_503_over_tls(
    start_gateway: GatewayFactory, certs: Certs
) -> None:
    context = certs.client_context()
    with trio.fail_after(TIMEOUT):
        async with start_gateway(certs.changes({"server.max_connections": 1})) as gw:
            async with tls_connection(gw, context):
                await wait_until(lambda: gw.app.connections == 1, "the first connection counted")
                async with tls_connection(gw, context) as second:
                    reply = await read_reply(second)
            assert (reply.status, reply.headers.get("retry-after")) == (503, "1")
