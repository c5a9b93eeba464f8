"""One well-formed HTTP/1.1 request on a fresh connection, and the whole response, with h11
as the client (for the admin listener, the legacy site, any server a test runs)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import h11
import trio

from tests.support.timeouts import TIMEOUT


@dataclass
class Reply:
    """A whole response; header names lowercased (as h11 gives them), in order."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n == name.lower()), None)


async def fetch(
    url: str,
    target: str,
    headers: Iterable[tuple[str, str]] = (),
    *,
    method: str = "GET",
    body: bytes = b"",
) -> Reply:
    """``METHOD target`` to ``url`` (``http://host:port``) with ``Connection: close``, bounded
    by ``TIMEOUT``."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(host.strip("[]"), int(port))
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            head = [("Host", f"{host}:{port}"), ("Connection", "close"), *headers]
            if body:
                head.append(("Content-Length", str(len(body))))
            data = conn.send(h11.Request(method=method, target=target, headers=head))
            data += conn.send(h11.Data(data=body)) if body else b""
            data += conn.send(h11.EndOfMessage())
            await stream.send_all(data)
            response: h11.Response | None = None
            content = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(bytes(await stream.receive_some(65536)))
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    content += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
    assert response is not None
    decoded = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in response.headers]
    return Reply(response.status_code, decoded, bytes(content))
