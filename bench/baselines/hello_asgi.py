"""The peer for tiny responses in ``bench/http_bench.py``: uvicorn's hello world.

    python -m uvicorn bench.baselines.hello_asgi:app --http h11 --loop asyncio

Every request gets ``200 ok`` (3 bytes, ``text/plain``), as the gateway's ``/healthz`` does;
uvicorn adds ``date`` and ``server`` as the gateway does.  h11 parses in both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

_HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"3")]


async def app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": b"ok\n"})
