"""The upstreams the gateway's proxy and relay are tested against, one per role:

* :class:`UpstreamProcess` (here): the well-behaved legacy HTTP site, the standard library's
  ``http.server`` in a subprocess (``upstream_server.py``): every path a proxy test needs
  (streams, stalls, cuts, hop-by-hop fields, a JSON echo of the request) and ``/__stats`` of
  what it received;
* :mod:`tests.support.legacy_site`: the project's example site (examples/legacy/app.py) under
  uvicorn, for the tests of that example and of what uses its login and ``/ws/echo``
  (``auth_url``, the relay);
* :mod:`tests.support.raw_upstream`: an HTTP upstream that misbehaves byte by byte (desync,
  bodies where none may be);
* :mod:`tests.support.ws_upstream`: a WebSocket upstream that misbehaves after (or during) its
  101, for the relay.

Each plays a part the others cannot: the example site is under test itself, and the two
scripted ones write exactly the wrong bytes a test names, which no real server would.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import select
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

from tests.support.raw_http import Response
from tests.support.timeouts import STARTUP_DEADLINE, TIMEOUT

SERVER = Path(__file__).with_name("upstream_server.py")
KILL_WAIT = 5.0  # seconds for a SIGKILLed process to be reaped


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
        # Its first line is its port; bounded, so a server that never starts fails the test.
        ready, _, _ = select.select([self.proc.stdout], [], [], STARTUP_DEADLINE)
        line = self.proc.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            self.stop()
            raise AssertionError(f"{SERVER.name} did not print its port: {line!r}")
        self.port = int(line)

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
        self.proc.wait(KILL_WAIT)

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


def echoed(response: Response) -> dict[str, Any]:
    """The upstream's JSON echo of a request; header names lowercased, in order."""
    assert response.status == 200, (response.status, response.body[:300])
    data: dict[str, Any] = json.loads(response.body)
    data["headers"] = [(k.lower(), v) for k, v in data["headers"]]
    return data


def header_values(echo: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k == name]
