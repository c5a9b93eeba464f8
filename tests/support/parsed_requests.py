"""Build h11 requests the way the server sees them: by parsing bytes with an h11 server."""

from __future__ import annotations

import h11

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's sample key


def parse(raw: bytes) -> h11.Request:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, h11.Request), event
    return event


def request(
    target: str = "/",
    headers: list[tuple[str, str]] | None = None,
    *,
    method: str = "GET",
    version: str = "1.1",
    host: str | None = "gateway.test",
) -> h11.Request:
    lines = [f"{method} {target} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{n}: {v}" for n, v in headers or []]
    return parse(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


def upgrade_headers(**overrides: str | None) -> list[tuple[str, str]]:
    """A valid handshake's headers; ``key=None`` drops a header, a value replaces it."""
    base = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    for name, value in overrides.items():
        header = name.replace("_", "-")
        match = next((k for k in base if k.lower() == header.lower()), header)
        if value is None:
            base.pop(match, None)
        else:
            base[match] = value
    return list(base.items())


def upgrade(target: str = "/echo", **overrides: str | None) -> h11.Request:
    return request(target, upgrade_headers(**overrides))
