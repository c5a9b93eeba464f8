"""Helpers for the proxy tests: the legacy-site subprocess and a response reader that, unlike
:class:`tests.integration.conftest.RawClient`'s, understands chunked and close-delimited bodies
and can tell a cut response from a complete one."""

from __future__ import annotations

import hashlib
import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from tests.integration.conftest import TIMEOUT, Response

SERVER = Path(__file__).with_name("upstream_server.py")


class UpstreamProcess:
    """``upstream_server.py`` running on 127.0.0.1 on a port the OS picked."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats_now(self) -> dict[str, Any]:
        """What the upstream received so far (asked directly, not through the gateway)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            conn.request("GET", "/__stats")
            data: dict[str, Any] = json.loads(conn.getresponse().read())
        finally:
            conn.close()
        return data

    async def stats(self) -> dict[str, Any]:
        return await trio.to_thread.run_sync(self.stats_now)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@contextmanager
def running_upstream() -> Iterator[UpstreamProcess]:
    upstream = UpstreamProcess()
    try:
        yield upstream
    finally:
        upstream.stop()


def pattern_sha256(size: int) -> str:
    """The digest of what ``/big?size=N`` serves, computed in 64 KiB blocks."""
    block = bytes(range(256)) * 256
    sha = hashlib.sha256()
    left = size
    while left:
        piece = block[: min(left, len(block))]
        sha.update(piece)
        left -= len(piece)
    return sha.hexdigest()


class Cut(AssertionError):
    """The connection ended before the response was complete."""


@dataclass
class HTTPReader:
    """Reads responses off a stream; bodies by Content-Length, chunked, or until EOF."""

    stream: trio.SocketStream
    buffer: bytearray = field(default_factory=bytearray)

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buffer += data
        return bool(data)

    async def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not await self._fill():
                raise Cut(f"EOF inside a line: {bytes(self.buffer[:200])!r}")
        end = self.buffer.index(b"\r\n")
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    async def head(self) -> Response:
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                raise Cut(f"EOF before a complete head: {bytes(self.buffer[:200])!r}")
        end = self.buffer.index(b"\r\n\r\n")
        text = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        status_line, *lines = text.split("\r\n")
        _, status, reason = [*status_line.split(" ", 2), ""][:3]
        headers = []
        for line in lines:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        return Response(int(status), reason, headers)

    async def body_chunks(self, response: Response, *, head_request: bool = False) -> Any:
        """Yield the body's pieces; raises :class:`Cut` if the connection ends early."""
        if head_request or response.status < 200 or response.status in (204, 304):
            return
        if (response.header("transfer-encoding") or "").lower() == "chunked":
            while True:
                size = int((await self._line()).split(b";")[0], 16)
                if size == 0:
                    while await self._line():
                        pass
                    return
                async for piece in self._exactly(size):
                    yield piece
                if await self._line() != b"":
                    raise AssertionError("chunk not followed by CRLF")
        elif (length := response.header("content-length")) is not None:
            async for piece in self._exactly(int(length)):
                yield piece
        else:
            while True:
                if self.buffer:
                    yield bytes(self.buffer)
                    self.buffer.clear()
                if not await self._fill():
                    return

    async def _exactly(self, n: int) -> Any:
        left = n
        while left:
            if not self.buffer and not await self._fill():
                raise Cut(f"EOF with {left} of {n} body bytes missing")
            piece = bytes(self.buffer[:left])
            del self.buffer[: len(piece)]
            left -= len(piece)
            yield piece

    async def response(self, *, head_request: bool = False) -> Response:
        """A whole response, its body in ``.body``; skips 1xx interim responses."""
        while True:
            response = await self.head()
            if response.status >= 200:
                break
        body = bytearray()
        async for piece in self.body_chunks(response, head_request=head_request):
            body += piece
        response.body = bytes(body)
        return response

    async def closed(self) -> bool:
        """Whether the peer closes the connection (nothing more arrives) within TIMEOUT."""
        with trio.move_on_after(TIMEOUT):
            try:
                while await self._fill():
                    pass
            except trio.BrokenResourceError:
                pass  # a reset: the peer closed with our unread bytes in its buffer
            return True
        return False


def chunked(body: bytes, size: int = 65536) -> bytes:
    """``body`` in chunked transfer coding (RFC 9112 §7.1)."""
    out = bytearray()
    for i in range(0, len(body), size):
        piece = body[i : i + size]
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
    return bytes(out + b"0\r\n\r\n")


def echoed(response: Response) -> dict[str, Any]:
    """The upstream's JSON echo of a request; header names lowercased, in order."""
    assert response.status == 200, (response.status, response.body[:300])
    data: dict[str, Any] = json.loads(response.body)
    data["headers"] = [(k.lower(), v) for k, v in data["headers"]]
    return data


def header_values(echo: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k == name]


def rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")
