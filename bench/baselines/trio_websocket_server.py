"""Baseline 1: a bare trio-websocket server with the benchmark's two paths.

``/echo`` sends every message back; ``/broadcast`` sends every message to every connection of
the path, the straightforward way: a set of connections and a sequential ``send_message`` to
each (one slow subscriber delays the rest, which the gateway's queued broadcast avoids).
trio-websocket never negotiates permessage-deflate, so compression is off.

    python bench/baselines/trio_websocket_server.py --listen 127.0.0.1:0

logs ``listening on http://HOST:PORT`` on stderr, like ``gateway serve``.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    serve_websocket,
)

MAX_MESSAGE_SIZE = 2 * 1024 * 1024  # the large scenario echoes 1 MiB messages


class Server:
    def __init__(self) -> None:
        self.room: set[WebSocketConnection] = set()

    async def handler(self, request: WebSocketRequest) -> None:
        if request.path not in ("/echo", "/broadcast"):
            await request.reject(404)
            return
        ws = await request.accept()
        try:
            if request.path == "/echo":
                while True:
                    await ws.send_message(await ws.get_message())
            else:
                await self.broadcast(ws)
        except ConnectionClosed:
            pass

    async def broadcast(self, ws: WebSocketConnection) -> None:
        self.room.add(ws)
        try:
            while True:
                message = await ws.get_message()
                for peer in list(self.room):
                    try:
                        await peer.send_message(message)
                    except ConnectionClosed:
                        self.room.discard(peer)
        finally:
            self.room.discard(ws)


async def main(host: str, port: int, max_size: int) -> None:
    server = Server()
    async with trio.open_nursery() as nursery:
        ws_server: WebSocketServer = await nursery.start(
            partial(serve_websocket, server.handler, host, port, None, max_message_size=max_size)
        )
        print(f"listening on http://{host}:{ws_server.port}", file=sys.stderr, flush=True)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT")
    parser.add_argument("--max-size", type=int, default=MAX_MESSAGE_SIZE)
    args = parser.parse_args()
    host, _, port = str(args.listen).rpartition(":")
    try:
        trio.run(main, host, int(port), int(args.max_size))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    cli()
