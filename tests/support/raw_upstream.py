"""A legacy site that misbehaves on purpose: an in-process trio server speaking raw HTTP/1.1.

Unlike ``tests/support/upstream_server.py`` (the standard library's well-behaved server),
this one writes exactly the bytes a test scripts, so tests can play the upstreams a proxy must
survive: a ``Content-Length`` shorter than the body, a body on a 204/304 or on a HEAD answer, a
site that never reads a request body and answers it as a second request ("CL.0").

It parses requests the way a naive server would: a head up to the blank line, then
``Content-Length`` bytes of body, unless the target asks it to ignore the body (``/cl0``),
in which case the body bytes are parsed as the next request.  All the requests complete in
its buffer are answered together in one write, so "the answer and the surplus arrive in one
segment" is deterministic.  Every path answers:

* ``/own/<id>``: 200, body ``own:<id>`` (the victims: each must get exactly its own);
* ``/cl-short``: ``Content-Length: 5`` followed by 5 bytes *and* :data:`POISON`;
* ``/204-body``, ``/304-body``: that status, then :data:`POISON` as a "body";
* ``HEAD /head-body``: a ``Content-Length`` and :data:`POISON` as the body (HEAD has none);
* ``/cl0``: 200 ``ok`` without reading the body (which is then answered as a request);
* ``/cl0-late``: like ``/cl0``, but the answer to the body-as-request comes
  ``late`` seconds after the first answer;
* ``/reflect?...``: 200 with the query as the body (the "attacker-chosen" answer);
* anything else: 200 ``plain``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

POISON = (
    b"HTTP/1.1 200 OK\r\nX-Poison: yes\r\nContent-Length: 27\r\n\r\nPRIVATE DATA FOR [ALICE]!!!"
)


def response(status: int, body: bytes, *, reason: bytes = b"OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n%s\r\n%s" % (
        status,
        reason,
        len(body),
        extra,
        body,
    )


@dataclass
class RawUpstream:
    """The running server: its port, what it saw, and a knob for ``/cl0-late``."""

    port: int = 0
    late: float = 0.3
    connections: int = 0  # TCP connections accepted
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, target) parsed

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buffer = bytearray()
        async with stream:
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return
                if not data:
                    return
                buffer += data
                out, later = self._answer(buffer)
                if out:
                    await stream.send_all(out)
                if later:
                    await trio.sleep(self.late)
                    await stream.send_all(later)

    def _answer(self, buffer: bytearray) -> tuple[bytes, bytes]:
        """Answer every complete request in ``buffer`` (consuming it): (now, after ``late``)."""
        out = bytearray()
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
            method, target, _ = head[0].split(" ", 2)
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            ignores_body = target.startswith("/cl0")
            if len(buffer) < end + 4 + length:
                break  # wait for the body (a CL.0 site gets it too, it just never reads it)
            del buffer[: end + 4 + (0 if ignores_body else length)]
            self.requests.append((method, target))
            if target == "/cl0-late":
                out += response(200, b"ok")
                later, _ = self._answer(buffer)  # the body, read as a request: answered late
                return bytes(out), later
            out += self._one(method, target)
        return bytes(out), b""

    def _one(self, method: str, target: str) -> bytes:
        if target.startswith("/own/"):
            return response(200, b"own:" + target[5:].encode())
        if target == "/cl-short":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + POISON
        if target == "/204-body":
            return b"HTTP/1.1 204 No Content\r\n\r\n" + POISON
        if target == "/304-body":
            return b"HTTP/1.1 304 Not Modified\r\n\r\n" + POISON
        if target == "/head-body" and method == "HEAD":
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(POISON), POISON)
        if target == "/cl0":
            return response(200, b"ok")
        if target.startswith("/reflect?"):
            return response(200, target.split("?", 1)[1].encode(), extra=b"X-Poison: yes\r\n")
        return response(200, b"plain")


@asynccontextmanager
async def raw_upstream(nursery: trio.Nursery) -> AsyncIterator[RawUpstream]:
    """Serve a :class:`RawUpstream` on 127.0.0.1 (a free port) until the block ends."""
    upstream = RawUpstream()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    upstream.port = listeners[0].socket.getsockname()[1]
    scope = trio.CancelScope()

    async def run() -> None:
        with scope:
            await trio.serve_listeners(upstream.serve, listeners)

    nursery.start_soon(run)
    try:
        yield upstream
    finally:
        scope.cancel()
