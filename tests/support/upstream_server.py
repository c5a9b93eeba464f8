"""A legacy HTTP site for the proxy tests: the standard library's ``http.server``, run as a
subprocess (``python upstream_server.py``), printing its port on the first line of stdout.

Every path answers; what it does depends on the path:

* ``/__stats``: JSON ``{"requests": [[method, target], ...], "connections": N}`` of what it
  received before (a connection counts once it carried a request other than ``/__stats``);
* ``/big?size=N[&chunked=1]``: ``N`` bytes of :func:`pattern` streamed in 64 KiB writes
  (generated, never stored), with Content-Length or chunked;
* ``/stall``: never answers; ``/stall-body``: a head for 1000 bytes, 10 of them, then silence;
* ``/close-mid``: a head for 1 000 000 bytes, 1000 of them, then the socket is closed;
* ``/status/NNN``: that status (no body for 204 and 304);
* ``/hop``: a response full of hop-by-hop fields;
* ``/close-delimited``: an HTTP/1.0-style body ended by closing the connection;
* ``/reject-expect``: answers ``Expect: 100-continue`` with 417 instead of 100;
* anything else: JSON of the request: method, target, headers (in order), body length and
  sha256 (the body is read per Content-Length or chunked).
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

BLOCK = bytes(range(256)) * 256  # 64 KiB


def pattern(size: int) -> bytes:
    """The first ``size`` bytes ``/big`` serves (tests compute the expected digest with it)."""
    return (BLOCK * (size // len(BLOCK) + 1))[:size]


class Stats:
    lock = threading.Lock()
    requests: ClassVar[list[list[str]]] = []
    connections = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "legacy-site"

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet

    def setup(self) -> None:
        super().setup()
        self.counted = False

    # -- dispatch -----------------------------------------------------------------------------

    def handle_expect_100(self) -> bool:
        if self.path.startswith("/reject-expect"):
            self.send_response(417)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        return super().handle_expect_100()

    def do_any(self) -> None:
        path = urlsplit(self.path).path
        if path != "/__stats":
            with Stats.lock:
                Stats.requests.append([self.command, self.path])
                if not self.counted:
                    self.counted = True
                    Stats.connections += 1
        handler = getattr(self, "route_" + path.strip("/").split("/")[0].replace("-", "_"), None)
        if path == "/__stats":
            handler = self.route_stats
        (handler or self.route_echo)()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_any

    # -- routes -------------------------------------------------------------------------------

    def route_stats(self) -> None:
        with Stats.lock:
            data = {"requests": Stats.requests, "connections": Stats.connections}
        self.send_json(data)

    def route_echo(self) -> None:
        body_len, digest = self.read_body()
        self.send_json(
            {
                "method": self.command,
                "target": self.path,
                "version": self.request_version,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body_len": body_len,
                "body_sha256": digest,
            }
        )

    def route_big(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        size = int(query["size"][0])
        chunked = query.get("chunked") == ["1"]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        if self.command == "HEAD":
            return
        left = size
        while left:
            piece = BLOCK[: min(left, len(BLOCK))]
            left -= len(piece)
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            else:
                self.wfile.write(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def route_stall(self) -> None:
        time.sleep(3600)

    def route_stall_body(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"x" * 10)
        self.wfile.flush()
        time.sleep(3600)

    def route_close_mid(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        self.wfile.write(b"y" * 1000)
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def route_status(self) -> None:
        status = int(urlsplit(self.path).path.rsplit("/", 1)[1])
        self.read_body()
        self.send_response(status)
        if status in (204, 304):
            self.end_headers()
            return
        body = f"status {status}\n".encode()
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def route_hop(self) -> None:
        body = b"hop\n"
        self.send_response(200)
        self.send_header("Connection", "X-Hop-Secret")
        self.send_header("X-Hop-Secret", "1")
        self.send_header("Keep-Alive", "timeout=5")
        self.send_header("Proxy-Authenticate", "Basic")
        self.send_header("Upgrade", "h2c")
        self.send_header("Trailer", "X-Checksum")
        self.send_header("X-End-To-End", "kept")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def route_close_delimited(self) -> None:
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"until the end\n" * 100)
        self.close_connection = True

    def route_reject_expect(self) -> None:
        self.route_echo()

    # -- helpers ------------------------------------------------------------------------------

    def read_body(self) -> tuple[int, str]:
        sha = hashlib.sha256()
        total = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                left = size
                while left:
                    data = self.rfile.read(min(left, 65536))
                    if not data:
                        raise ConnectionError("EOF in chunk")
                    sha.update(data)
                    left -= len(data)
                total += size
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left:
                data = self.rfile.read(min(left, 65536))
                if not data:
                    raise ConnectionError("EOF in body")
                sha.update(data)
                total += len(data)
                left -= len(data)
        return total, sha.hexdigest()

    def send_json(self, data: object) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
