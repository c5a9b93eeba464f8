"""The client's side of the proxy tests: a response reader that, unlike
:class:`tests.support.raw_http.RawClient`'s, understands chunked and close-delimited bodies
and can tell a cut response from a complete one; a chunked body."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio

from tests.support.raw_http import Response
from tests.support.timeouts import TIMEOUT


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
