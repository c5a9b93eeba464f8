"""Fixtures and helpers for the integration tests: real sockets on 127.0.0.1, real clients.

Two ways to run a gateway:

* in process (:func:`start_gateway` / the ``gateway`` fixture): the App is built from a config
  dict (``config.toml`` plus test tweaks, see :func:`config_data`), served by
  :func:`gateway.server.serve` on a port the OS picks, inside the test's own trio run;
* as a subprocess (:class:`GatewayProcess`, the ``gateway_process`` fixture): ``python -m
  gateway serve --config FILE --listen 127.0.0.1:0``, for asyncio clients (``websockets``)
  that cannot run inside trio, and for the CLI.  Its stderr is drained by a thread.

The test modules import the plain helpers from here (``from tests.integration.conftest
import ...``); everything that needs set-up and teardown is a fixture.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import shlex
import signal
import struct
import subprocess
import sys
import threading
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import pytest
import trio
import trio_websocket

from gateway.app import App, build
from gateway.config.load import parse
from gateway.core.address import ListenAddress
from gateway.server import open_listeners, serve

if TYPE_CHECKING:
    from tests.integration.proxy_support import UpstreamProcess

REPO = Path(__file__).resolve().parents[2]
STATIC_ROOT = REPO / "examples" / "public"
TEST_SECRET = "integration-test-secret-0123456789"
TIMEOUT = 10.0  # seconds: no single client step may take longer
STARTUP_DEADLINE = 20.0  # seconds until a gateway subprocess must have logged its address
STOP_TIMEOUT = 15.0  # seconds between SIGTERM and SIGKILL
LISTENING = re.compile(r"listening on (https?://[^\s\"]+)")  # text or JSON lines
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
PLUGINS_MODULE = "tests.integration.wire_plugins"


# --------------------------------------------------------------------------- configs


def config_data(changes: Mapping[str, object] | None = None) -> dict[str, Any]:
    """``config.toml`` as data, adjusted for tests, then ``changes`` applied.

    Adjustments: an absolute static root (so the data works from any folder), a short
    shutdown grace, a fast hello/clock, and two test mounts: ``/boom`` (echo that crashes on
    ``"boom"``) and ``/spy/{name}`` (echo that records the calls it gets).  ``changes`` maps
    dotted key paths to values (``{"server.unknown_path": "404"}``); ``None`` deletes the key.
    """
    with (REPO / "config.toml").open("rb") as f:
        data = tomllib.load(f)
    data["http"]["static_root"] = str(STATIC_ROOT)
    data["server"]["shutdown_timeout"] = 2.0
    data["plugins"]["hello"]["options"] = {"wait": 0.2}
    data["plugins"]["clock"]["options"]["interval"] = 0.2
    data["plugins"]["boom"] = {"path": "/boom", "use": f"{PLUGINS_MODULE}:boom_echo"}
    data["plugins"]["spy"] = {"path": "/spy/{name}", "use": f"{PLUGINS_MODULE}:Spy"}
    for path, value in (changes or {}).items():
        set_key(data, path, value)
    return data


def set_key(data: dict[str, Any], path: str, value: object) -> None:
    """Set (or with ``None`` delete) the dotted key ``path`` in ``data``, creating tables."""
    *tables, last = path.split(".")
    table = data
    for name in tables:
        table = table.setdefault(name, {})
    if value is None:
        table.pop(last, None)
    else:
        table[last] = copy.deepcopy(value)


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """A minimal TOML writer for config dicts (tables, strings, numbers, bools, arrays)."""
    scalars = [f"{_key(k)} = {_value(v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    out = "\n".join(scalars) + "\n" if scalars else ""
    for k, v in data.items():
        if isinstance(v, Mapping):
            name = f"{prefix}.{_key(k)}" if prefix else _key(k)
            out += f"\n[{name}]\n" + to_toml(v, name)
    return out


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_config(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(to_toml(data), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- in process


@dataclass
class Running:
    """An in-process gateway serving on ``url`` (``http://127.0.0.1:PORT``)."""

    url: str
    app: App

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def ws_url(self, path: str) -> str:
        return "ws" + self.url.removeprefix("http") + path


class GatewayFactory(Protocol):
    def __call__(
        self,
        changes: Mapping[str, object] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[Running]: ...


@pytest.fixture
def start_gateway(nursery: trio.Nursery) -> GatewayFactory:
    """``async with start_gateway({"server.unknown_path": "404"}) as gw:`` serves a variant.

    The server runs in pytest-trio's ``nursery`` fixture (not in a nursery of the test body,
    so a failing assertion is reported as itself, not inside an ExceptionGroup).  Leaving the
    block sets the shutdown event and waits for the drain.
    """

    @asynccontextmanager
    async def start(
        changes: Mapping[str, object] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Running]:
        served = await serve_with_shutdown(nursery, changes, environ=environ)
        try:
            yield served.running
        finally:
            served.shutdown.set()
            with trio.fail_after(STOP_TIMEOUT):
                await served.stopped.wait()

    return start


@dataclass
class Served:
    running: Running
    shutdown: trio.Event
    stopped: trio.Event


async def serve_with_shutdown(
    nursery: trio.Nursery,
    changes: Mapping[str, object] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Served:
    """Run a gateway (``config_data(changes)``) in ``nursery``; the caller holds the
    shutdown event (``start_gateway`` sets it when its block ends)."""
    app = build(parse(config_data(changes), base_dir=REPO), environ=environ or {})
    listeners = await open_listeners([ListenAddress("127.0.0.1", 0)])
    shutdown = trio.Event()
    stopped = trio.Event()

    async def run(*, task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await serve(app, listeners, shutdown, task_status=task_status)
        finally:
            stopped.set()

    urls: list[str] = await nursery.start(run)
    return Served(Running(urls[0], app), shutdown, stopped)


@asynccontextmanager
async def ws_client(
    running: Running, path: str
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A trio-websocket client that never leaks its socket."""
    async with trio_websocket.open_websocket_url(
        running.ws_url(path), connect_timeout=TIMEOUT, disconnect_timeout=TIMEOUT
    ) as ws:
        try:
            yield ws
        finally:
            if ws.closed is not None:
                # trio-websocket 0.12.2 leaks the client socket when the server closed first
                # (its aclose() returns early once a close reason is set, and its reader only
                # stops on EOF): close the TCP stream ourselves, or the ResourceWarning fails
                # the run under filterwarnings = error.
                await ws._stream.aclose()


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll server-side state that settles a moment after the client saw the effect (e.g. a
    mount forgets a client only after the close handshake has finished)."""
    deadline = trio.current_time() + timeout
    while not predicate():
        if trio.current_time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await trio.sleep(0.01)  # the gateway has no event for these; poll briefly


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> AsyncIterator[Running]:
    """The in-process gateway with :func:`config_data`'s config."""
    async with start_gateway() as running:
        yield running


# --------------------------------------------------------------------------- raw HTTP


@dataclass
class Response:
    """One HTTP response read off the wire; header names lowercased, in order."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n == name.lower()), None)

    def header_values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name.lower()]


@dataclass
class RawClient:
    """A TCP connection we write bytes to and parse responses from by hand."""

    stream: trio.SocketStream
    buffer: bytearray = field(default_factory=bytearray)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buffer += data
        return bool(data)

    async def read_response(self, *, head_request: bool = False) -> Response:
        """Read one response (head and Content-Length body; none for HEAD/1xx/204/304)."""
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                raise AssertionError(f"EOF before a complete response head: {bytes(self.buffer)!r}")
        end = self.buffer.index(b"\r\n\r\n")
        head = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        status_line, *lines = head.split("\r\n")
        version, status, reason = [*status_line.split(" ", 2), ""][:3]
        assert version == "HTTP/1.1", status_line
        headers = []
        for line in lines:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        response = Response(int(status), reason, headers)
        code = response.status
        if head_request or code < 200 or code in (204, 304):
            return response
        length = int(response.header("content-length") or "0")
        assert response.header("transfer-encoding") is None, "the gateway never sends chunked"
        response.body = await self.receive_exactly(length)
        return response

    async def receive_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not await self._fill():
                raise AssertionError(f"EOF after {len(self.buffer)} of {n} bytes")
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def read_until_eof(self) -> bytes:
        """Everything until the server closes (what is already buffered included)."""
        while await self._fill():
            pass
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def read_frame(self) -> tuple[int, bool, bytes]:
        """One unmasked server frame: ``(opcode, fin, payload)``."""
        b0, b1 = await self.receive_exactly(2)
        assert not b1 & 0x80, "server frames must not be masked (RFC 6455 §5.1)"
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.receive_exactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.receive_exactly(8))
        return b0 & 0x0F, bool(b0 & 0x80), await self.receive_exactly(length)


@asynccontextmanager
async def raw_connection(running: Running) -> AsyncIterator[RawClient]:
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(running.host, running.port)
    async with stream:
        yield RawClient(stream)


def request(
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    host: str = "127.0.0.1",
    version: str = "HTTP/1.1",
    body: bytes = b"",
) -> bytes:
    """A request's bytes: the request line, ``Host`` (unless ``host`` is empty), headers, body."""
    lines = [f"{method} {target} {version}"]
    if host:
        lines.append(f"Host: {host}")
    lines.extend(f"{n}: {v}" for n, v in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# --------------------------------------------------------------------------- WebSocket wire


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode("ascii")


def expected_accept(key: str) -> str:
    """RFC 6455 §4.2.2 step 5.4, computed independently of the gateway."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + WS_GUID).digest()).decode("ascii")


def upgrade_headers(key: str, *, version: str = "13") -> list[tuple[str, str]]:
    return [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", version),
    ]


OP_TEXT, OP_BINARY, OP_CLOSE = 0x1, 0x2, 0x8


def masked_frame(
    opcode: int, payload: bytes, *, mask: bytes = b"\x37\xfa\x21\x3d", fin: bool = True
) -> bytes:
    """A client frame (RFC 6455 §5.2): clients must mask every frame."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


# --------------------------------------------------------------------------- subprocess


class GatewayProcess:
    """A gateway subprocess whose stderr is drained by a thread, so the pipe never fills."""

    def __init__(self, args: Sequence[str], *, env: Mapping[str, str] | None = None) -> None:
        self.cmd = [sys.executable, "-m", "gateway", *args]
        self.lines: list[str] = []
        self.url: str | None = None
        self._found = threading.Event()
        self._eof = False
        environ = {k: v for k, v in os.environ.items() if k != "GATEWAY_SECRET"}
        environ.update(env or {})
        environ["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=REPO,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        assert self.proc.stderr is not None
        self._reader = threading.Thread(
            target=self._drain, args=(self.proc.stderr,), name="gateway-stderr", daemon=True
        )
        self._reader.start()

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            if self.url is None and (m := LISTENING.search(line)):
                self.url = m.group(1).rstrip("/")
                self._found.set()
        self._eof = True
        self._found.set()

    def wait_ready(self, timeout: float = STARTUP_DEADLINE) -> str:
        """The base URL once logged; fails the test with the log if it is not in time."""
        self._found.wait(timeout)
        if self.url is None:
            self.stop()
            pytest.fail(
                f"gateway did not log 'listening on http://...' within {timeout:.0f} s: "
                f"{shlex.join(self.cmd)}\n{self.log()}",
                pytrace=False,
            )
        return self.url

    @property
    def port(self) -> int:
        assert self.url is not None
        return int(self.url.rsplit(":", 1)[1])

    def ws_url(self, path: str) -> str:
        assert self.url is not None
        return "ws" + self.url.removeprefix("http") + path

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT``; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.lines.append(f"[conftest] no exit {STOP_TIMEOUT:.0f} s after SIGTERM: killed")
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()  # an open pipe would be a ResourceWarning, i.e. an error
        return self.proc.returncode

    def wait_exit(self, timeout: float) -> int:
        """The exit status, waiting at most ``timeout`` (then: killed, test failed)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.stop()
            pytest.fail(f"gateway did not exit within {timeout} s\n{self.log()}", pytrace=False)
        self._reader.join(5)
        return code

    def log(self) -> str:
        return "\n".join(self.lines[-200:]) or "(no output)"


@pytest.fixture(scope="session")
def gateway_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway subprocess for the whole session, on :func:`config_data`'s config
    (written to a temporary folder, so the test plugins load from the repo via ``cwd``)."""
    config = write_config(tmp_path_factory.mktemp("gateway") / "config.toml", config_data())
    process = GatewayProcess(["serve", "--config", str(config), "--listen", "127.0.0.1:0"])
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture
def upstream() -> Iterator[UpstreamProcess]:
    """The standard library's legacy site (``upstream_server.py``) in a subprocess."""
    from tests.integration.proxy_support import running_upstream  # it imports this module

    with running_upstream() as up:
        yield up
