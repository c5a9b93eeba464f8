"""The tests' one runner for a gateway subprocess: ``python -m gateway ARGS`` from the repository,
as an operator runs it.

Used where the gateway must be a process of its own: for asyncio clients (``websockets``)
that cannot run inside trio, the browser tests, the CLI and signal handling, the supervised
workers, a cluster of nodes, and a process with a low ``RLIMIT_NOFILE``.  Its stderr is drained
by a thread (so the pipe never fills) into :attr:`GatewayProcess.lines`; the URL is taken from
the first ``listening on http://...`` line.  Stopping is bounded: SIGTERM, then SIGKILL after
:data:`~tests.support.timeouts.STOP_TIMEOUT`.

``GATEWAY_SECRET`` is never inherited from the developer's environment: a test that needs a
secret passes it in ``env``.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import pytest

from tests.support.gateway_config import REPO, write_config
from tests.support.timeouts import STARTUP_DEADLINE, STOP_TIMEOUT

LISTENING = re.compile(r"listening on (https?://[^\s\"]+)")  # text or JSON lines
KILL_WAIT = 5.0  # seconds for a SIGKILLed process to be reaped
# Sets the file-descriptor limit in the child itself, then runs ``python -m gateway``: no
# preexec_fn (which is unsafe in a process with threads, as pytest-trio's).
_BOOT = (
    "import resource, runpy, sys\n"
    "limit = int(sys.argv.pop(1))\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))\n"
    "sys.argv[0] = 'gateway'\n"
    "runpy.run_module('gateway', run_name='__main__', alter_sys=True)\n"
)


class GatewayProcess:
    """A running ``python -m gateway ARGS``; started at once, ready after :meth:`wait_ready`.

    ``with GatewayProcess.serve(config) as gw:`` waits until it listens and stops it at the
    end.  ``command`` replaces the whole command line (the browser tests' ``GATEWAY_TEST_CMD``);
    ``fd_limit`` starts it with that ``RLIMIT_NOFILE``.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
        fd_limit: int | None = None,
    ) -> None:
        if command is not None:
            assert not args and fd_limit is None, "command replaces args and fd_limit"
            self.cmd = list(command)
        elif fd_limit is not None:
            self.cmd = [sys.executable, "-c", _BOOT, str(fd_limit), *args]
        else:
            self.cmd = [sys.executable, "-m", "gateway", *args]
        self.lines: list[str] = []
        self.url: str | None = None
        self._found = threading.Event()
        self._eof = False
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        environ = {k: v for k, v in os.environ.items() if k != "GATEWAY_SECRET"}
        environ.update(env or {})
        environ["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=REPO,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        assert self.proc.stderr is not None
        self._reader = threading.Thread(
            target=self._drain, args=(self.proc.stderr,), name="gateway-stderr", daemon=True
        )
        self._reader.start()

    @classmethod
    def serve(
        cls,
        config: Path | Mapping[str, Any],
        *options: str,
        listen: str = "127.0.0.1:0",
        env: Mapping[str, str] | None = None,
        fd_limit: int | None = None,
    ) -> GatewayProcess:
        """``gateway serve --config CONFIG --listen LISTEN OPTIONS``.  A config given as data is
        written to a temporary folder of its own, removed when the process is stopped (the
        test plugins still load: the process runs from the repository)."""
        folder = None
        if not isinstance(config, Path):
            folder = tempfile.TemporaryDirectory(prefix="gateway-")
            config = write_config(Path(folder.name) / "config.toml", config)
        args = ["serve", "--config", str(config), "--listen", listen, *options]
        process = cls(args, env=env, fd_limit=fd_limit)
        process._folder = folder
        return process

    def _drain(self, stream: IO[str]) -> None:
        # Runs until EOF (the process exited), long after the address was found.
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            if self.url is None and (m := LISTENING.search(line)):
                self.url = m.group(1).rstrip("/")
                self._found.set()
        self._eof = True
        self._found.set()  # EOF: wake the waiter so it reports the failure at once

    # -- where it serves ----------------------------------------------------------------------

    def wait_ready(self, timeout: float = STARTUP_DEADLINE) -> str:
        """The base URL once logged; fails the test with the log if it is not in time."""
        self._found.wait(timeout)
        if self.url is None:
            if self._eof:
                try:
                    why = f"exited with status {self.proc.wait(STOP_TIMEOUT)}"
                except subprocess.TimeoutExpired:
                    why = "closed its stderr without logging 'listening on http://...'"
            else:
                why = f"did not log 'listening on http://...' within {timeout:.0f} s"
            self.stop()
            pytest.fail(f"gateway {why}: {shlex.join(self.cmd)}\n{self.log()}", pytrace=False)
        return self.url

    @property
    def host(self) -> str:
        assert self.url is not None, "not ready: call wait_ready() first"
        return self.url.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        assert self.url is not None, "not ready: call wait_ready() first"
        return int(self.url.rsplit(":", 1)[1])

    def ws_url(self, path: str) -> str:
        assert self.url is not None, "not ready: call wait_ready() first"
        return "ws" + self.url.removeprefix("http") + path

    @property
    def pid(self) -> int:
        return self.proc.pid

    # -- what it logged -----------------------------------------------------------------------

    def log(self, last: int = 200) -> str:
        return "\n".join(self.lines[-last:]) or "(no output)"

    def count(self, pattern: re.Pattern[str]) -> int:
        """How many lines so far match ``pattern``."""
        return sum(1 for line in list(self.lines) if pattern.search(line))

    # -- signals and exit ---------------------------------------------------------------------

    def poll(self) -> int | None:
        return self.proc.poll()

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def terminate(self) -> None:
        """SIGTERM: the graceful shutdown (drain, then exit)."""
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: no goodbye to anyone."""
        self.proc.kill()

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT``; the exit status.  Idempotent."""
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.lines.append(f"[tests] no exit {STOP_TIMEOUT:.0f} s after SIGTERM: killed")
                self.proc.kill()
                self.proc.wait(KILL_WAIT)
        self._close()
        return self.proc.returncode

    def wait_exit(self, timeout: float) -> int:
        """The exit status, waiting at most ``timeout`` (then: killed, test failed)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.stop()
            pytest.fail(f"gateway did not exit within {timeout} s\n{self.log()}", pytrace=False)
        self._close()
        return code

    def _close(self) -> None:
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()  # an open pipe would be a ResourceWarning, i.e. an error
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def __enter__(self) -> GatewayProcess:
        self.wait_ready()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
