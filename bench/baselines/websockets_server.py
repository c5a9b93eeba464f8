"""Baseline 2: the ``websockets`` library's asyncio server with the benchmark's two paths.

``/echo`` sends every message back; ``/broadcast`` sends every message to every connection of
the path with :func:`websockets.asyncio.server.broadcast` (the frame is written to each
connection's buffer without waiting; a connection whose buffer is above its high-water mark
is skipped). Compression is off; everything else is the library's default.

    python bench/baselines/websockets_server.py --listen 127.0.0.1:0

logs ``listening on http://HOST:PORT`` on stderr, like ``gateway serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

MAX_MESSAGE_SIZE = 2 * 1024 * 1024  # the large scenario echoes 1 MiB messages
PATHS = ("/echo", "/broadcast")

room: set[ServerConnection] = set()


def only_known_paths(connection: ServerConnection, request: Request) -> Response | None:
    if request.path not in PATHS:
        return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
    return None


async def handler(ws: ServerConnection) -> None:
    assert ws.request is not None
    try:
        if ws.request.path == "/echo":
            async for message in ws:
                await ws.send(message)
        else:
            room.add(ws)
            try:
                async for message in ws:
                    broadcast(room, message)
            finally:
                room.discard(ws)
    except ConnectionClosed:
        pass


async def main(host: str, port: int, max_size: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with serve(
        handler,
        host,
        port,
        compression=None,
        max_size=max_size,
        process_request=only_known_paths,
    ) as server:
        bound = next(iter(server.sockets)).getsockname()
        print(f"listening on http://{host}:{bound[1]}", file=sys.stderr, flush=True)
        await stop.wait()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT")
    parser.add_argument("--max-size", type=int, default=MAX_MESSAGE_SIZE)
    args = parser.parse_args()
    host, _, port = str(args.listen).rpartition(":")
    asyncio.run(main(host, int(port), int(args.max_size)))


if __name__ == "__main__":
    cli()
