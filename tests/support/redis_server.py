"""A real ``redis-server`` for tests: on a free loopback port, in a temporary folder, bounded.

Use the ``redis_server`` fixture (import it into a conftest or test module:
``from tests.support.redis_server import redis_server  # noqa: F401``), or the class directly::

    with RedisServer(tmp_path) as redis:
        redis.url          # "redis://127.0.0.1:PORT/0"
        redis.kill()       # SIGKILL, as a crashed server
        redis.start()      # again, on the same port

The server keeps nothing on disk (no RDB snapshots, no AOF) and listens on 127.0.0.1 only.
Every wait is bounded: start fails the test with the server's log if it does not answer
``PING`` within :data:`START_DEADLINE`.  It needs Debian's ``redis-server``
(``scripts/setup --test`` installs it); a missing binary fails, never skips, so a silently
skipped suite never looks green.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from tests.support.ports import free_port

START_DEADLINE = 10.0  # seconds until a started server must answer PING
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL


def redis_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        pytest.fail(
            "redis-server not found: the broker tests need Debian's redis-server "
            "(apt-get install redis-server); scripts/setup --test installs it",
            pytrace=False,
        )
    return found


def ping(port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis server on 127.0.0.1:``port`` answers ``PING`` right now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process, startable again on the same port after :meth:`kill`."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.logfile = self.folder / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the server and wait until it answers ``PING`` (bounded)."""
        if self.running:
            return
        cmd = [
            redis_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.folder),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", str(self.logfile),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if ping(self.port):
                return
            time.sleep(0.02)
        status = self.proc.poll()
        self.stop()
        why = f"exited with status {status}" if status is not None else "did not answer PING"
        pytest.fail(f"redis-server on port {self.port} {why}:\n{self.log()}", pytrace=False)

    def kill(self) -> None:
        """SIGKILL (a crash: no goodbye to clients) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within :data:`STOP_TIMEOUT`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self.proc = None

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the server has used so far (from /proc; 0 if gone)."""
        if self.proc is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-4000:] or "(empty log)"
        except OSError:
            return "(no log)"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running ``redis-server`` for one test, stopped (and its files removed) after it."""
    with RedisServer(tmp_path / "redis") as server:
        yield server
