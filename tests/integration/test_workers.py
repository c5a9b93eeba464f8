"""``gateway serve --workers N``: a supervisor and N worker processes on one port, for real.

Every test runs ``python -m gateway serve --workers 2`` as a subprocess with a real
``redis-server`` behind ``[broker]`` (more than one worker needs one) and talks to it with
the ``websockets`` client.  The ``/pid`` mount says which worker process serves a session.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.gateway_config import REPO, config_data, write_config
from tests.support.gateway_process import GatewayProcess
from tests.support.raw_http import new_key, request, upgrade_headers
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401
from tests.support.timeouts import TIMEOUT
from tests.support.workers import (
    GRACE,
    MAX_TRIES,
    PLUGINS,
    SCENARIO_TIMEOUT,
    run,
    sessions_on,
    started,
    supervised,
    until,
    until_started,
    workers_config,
)


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def gone(pid: int) -> bool:
    """Exited (a zombie counts: whoever inherited it may not reap it at once)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


async def echoes(ws: ClientConnection, text: str) -> None:
    await ws.send(text)
    assert await ws.recv() == text


# --------------------------------------------------------------------------- tests


def test_two_workers_accept_on_one_port(tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    with supervised(workers_config(tmp_path, redis_server)) as process:
        run(lambda: until_started(process, 2))
        workers = {pid for _, pid in started(process)}
        assert len(workers) == 2
        assert {parent_of(pid) for pid in workers} == {process.pid}

        async def scenario() -> None:
            async with AsyncExitStack() as stack:
                by_pid = await sessions_on(process, stack, workers)
                assert by_pid.keys() == workers  # nobody else serves the port
                for sessions in by_pid.values():
                    await echoes(sessions[0], "hello")

        run(scenario)
        # Plain HTTP is served by the workers too.
        connection = http.client.HTTPConnection("127.0.0.1", process.port, timeout=TIMEOUT)
        try:
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, b"ok\n")
        finally:
            connection.close()
        assert process.stop() == 0, process.log()
    log = process.log()
    assert "listening on http://127.0.0.1:" in log
    for pid in workers:
        assert f"pid {pid}] listening on http://127.0.0.1:{process.port}" in log


def test_a_killed_worker_is_restarted_while_the_other_serves_on(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    with supervised(workers_config(tmp_path, redis_server)) as process:
        run(lambda: until_started(process, 2))
        (first, victim), (_, survivor) = started(process)

        async def scenario() -> int:
            async with AsyncExitStack() as stack:
                by_pid = await sessions_on(process, stack, {victim, survivor})
                os.kill(victim, signal.SIGKILL)
                for ws in by_pid[victim]:
                    with pytest.raises(ConnectionClosed) as info:
                        await ws.recv()
                    assert info.value.rcvd is None  # the process died: no Close frame
                await until(
                    lambda: len(started(process)) == 3, "the killed worker restarted", TIMEOUT
                )
                number, restarted = started(process)[2]
                assert number == first
                assert restarted not in (victim, survivor)
                # The other worker's sessions never noticed.
                for i, ws in enumerate(by_pid[survivor]):
                    await echoes(ws, f"still here {i}")
                # The new worker takes connections on the same port.
                more = await sessions_on(process, stack, {restarted})
                assert more.keys() <= {survivor, restarted}
                for ws in by_pid[survivor]:
                    await echoes(ws, "and still")
                return restarted

        restarted = run(scenario)
        assert parent_of(restarted) == process.pid
        assert process.stop() == 0, process.log()
    log = process.log()
    assert f"worker {first} (pid {victim}) killed by SIGKILL; restarting in 0.1s" in log
    assert "giving up" not in log


def test_sigterm_drains_every_worker(tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    with supervised(workers_config(tmp_path, redis_server)) as process:
        run(lambda: until_started(process, 2))
        workers = {pid for _, pid in started(process)}

        async def scenario() -> tuple[list[tuple[int, str]], float]:
            async with AsyncExitStack() as stack:
                by_pid = await sessions_on(process, stack, workers)
                sessions = [ws for group in by_pid.values() for ws in group]
                began = time.monotonic()
                process.terminate()
                closes = []
                for ws in sessions:
                    with pytest.raises(ConnectionClosed) as info:
                        await ws.recv()
                    assert info.value.rcvd is not None, "closed without a Close frame"
                    closes.append((info.value.rcvd.code, info.value.rcvd.reason))
                return closes, began

        closes, began = run(scenario)
        assert set(closes) == {(1001, "server shutting down")}
        assert process.wait_exit(GRACE + 5) == 0, process.log()
        assert time.monotonic() - began < GRACE + 5
    log = process.log()
    assert "SIGTERM: draining every worker" in log
    for pid in workers:
        assert f"pid {pid}] SIGTERM: draining" in log
        assert f"pid {pid}] stopped" in log
        assert f"(pid {pid}) exited with status 0" in log
    assert "shutdown timeout" not in log
    assert log.rstrip().endswith("gateway.supervisor: stopped (exit status 0)")


def test_workers_drain_when_the_supervisor_is_killed(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    with supervised(workers_config(tmp_path, redis_server)) as process:
        run(lambda: until_started(process, 2))
        workers = {pid for _, pid in started(process)}

        async def scenario() -> None:
            async with AsyncExitStack() as stack:
                by_pid = await sessions_on(process, stack, workers)
                process.kill()  # SIGKILL: no goodbye to its workers
                for group in by_pid.values():
                    for ws in group:
                        with pytest.raises(ConnectionClosed) as info:
                            await ws.recv()
                        assert info.value.rcvd is not None
                        assert info.value.rcvd.code == 1001
                await until(lambda: all(gone(pid) for pid in workers), "the workers exited")

        run(scenario)
        assert process.wait_exit(TIMEOUT) == -signal.SIGKILL
    log = process.log()
    for pid in workers:
        assert f"pid {pid}] supervisor gone: draining" in log
        assert f"pid {pid}] stopped" in log


def test_repeated_crashes_give_up_loudly(tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    crash = {"path": "/crash", "use": f"{PLUGINS}:CrashOnStart", "options": {"status": 3}}
    config = workers_config(tmp_path, redis_server, {"plugins.crash": crash})
    with supervised(config) as process:
        status = process.wait_exit(SCENARIO_TIMEOUT)
    log = process.log()
    assert status == 1, log
    assert "exited with status 3; restarting in 0.1s" in log
    assert "exited with status 3; restarting in 0.8s" in log
    giving_up = [line for line in log.splitlines() if "giving up" in line]
    assert len(giving_up) == 1, log
    assert "CRITICAL" in giving_up[0]
    assert re.search(r"worker \d \(pid \d+\) exited with status 3: 5 crashes in", giving_up[0])
    assert log.rstrip().endswith("gateway.supervisor: stopped (exit status 1)")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=SCENARIO_TIMEOUT,
    )


@pytest.mark.parametrize("command", ["check", "serve"])
@pytest.mark.parametrize(("where", "workers"), [("file", 2), ("file", "auto"), ("flag", 2)])
def test_more_than_one_worker_needs_a_broker(
    tmp_path: Path, command: str, where: str, workers: object
) -> None:
    changes = {"server.workers": workers} if where == "file" else {}
    config = write_config(tmp_path / "config.toml", config_data(changes))
    flags = ["--workers", str(workers)] if where == "flag" else []
    listen = ["--listen", "127.0.0.1:0"] if command == "serve" else []
    result = _cli(command, "--config", str(config), *flags, *listen)
    assert result.returncode == 2, result.stderr
    key = "server.workers" if where == "file" else "--workers"
    assert result.stderr.startswith(f"gateway: config error: {key}: "), result.stderr
    assert "need a [broker] table" in result.stderr
    assert "silently reach only the clients of the worker" in result.stderr
    assert "listening on" not in result.stderr
    assert "Traceback" not in result.stderr


def test_one_worker_runs_no_supervisor(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", config_data())
    process = GatewayProcess.serve(config, "--workers", "1")
    try:
        process.wait_ready()
        connection = http.client.HTTPConnection("127.0.0.1", process.port, timeout=TIMEOUT)
        try:
            connection.request("GET", "/healthz")
            assert connection.getresponse().status == 200
        finally:
            connection.close()
        # Serving in the process itself: no thread of it started a child.
        tasks = Path(f"/proc/{process.pid}/task").glob("*")
        assert [c for t in tasks for c in (t / "children").read_text().split()] == []
    finally:
        assert process.stop() == 0, process.log()
    log = process.log()
    assert "gateway.supervisor" not in log
    assert "[worker" not in log
    assert log.rstrip().endswith("gateway.server: stopped")


def test_a_chat_room_spans_the_workers(tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    chat = {"path": "/pchat/{room}", "use": f"{PLUGINS}:PidChat"}
    config = workers_config(tmp_path, redis_server, {"plugins.pchat": chat})
    with supervised(config) as process:
        run(lambda: until_started(process, 2))
        workers = {pid for _, pid in started(process)}

        async def scenario() -> dict[int, list[list[str]]]:
            async with AsyncExitStack() as stack:
                members: list[tuple[int, ClientConnection]] = []
                for _ in range(MAX_TRIES):
                    ws = await stack.enter_async_context(
                        connect(
                            process.ws_url("/pchat/lobby"),
                            proxy=None,
                            compression=None,
                            open_timeout=TIMEOUT,
                        )
                    )
                    hello = json.loads(await ws.recv())
                    assert hello["type"] == "pid"
                    members.append((hello["pid"], ws))
                    # One join at a time: its own notice, counted cluster-wide, says this
                    # member is in and its worker hears the room.
                    while True:
                        notice = json.loads(await ws.recv())
                        if notice["type"] == "join" and notice["members"] == len(members):
                            break
                    if {pid for pid, _ in members} == workers:
                        break
                else:
                    raise AssertionError(f"no chat member on every worker: {members}")
                senders = {pid: next(ws for p, ws in members if p == pid) for pid in workers}
                for pid, ws in senders.items():
                    await ws.send(f"hello from {pid}")
                    await ws.send(f"end {pid}")
                ends = {f"end {pid}" for pid in workers}
                heard: dict[int, list[list[str]]] = {}
                for pid, ws in members:
                    texts: list[str] = []
                    while not ends <= set(texts):
                        message = json.loads(await ws.recv())
                        if message["type"] == "message":
                            texts.append(message["text"])
                    heard.setdefault(pid, []).append(texts)
                return heard

        heard = run(scenario)
        assert process.stop() == 0, process.log()
    for pid, lists in heard.items():
        for texts in lists:
            for sender in workers:
                # Exactly once, in the sender's order, whichever worker the listener is on.
                assert texts.count(f"hello from {sender}") == 1, (pid, texts)
                assert texts.index(f"hello from {sender}") < texts.index(f"end {sender}")


def test_a_second_sigterm_stops_every_worker_now(tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    grace = 30.0
    config = workers_config(tmp_path, redis_server, {"server.shutdown_timeout": grace})
    with supervised(config) as process:
        run(lambda: until(lambda: process.log().count("] listening on ") == 2, "2 workers ready"))
        # A client that completes the handshake, then never answers the server's Close: the
        # drain would wait the whole grace for it.
        with socket.create_connection(("127.0.0.1", process.port), timeout=TIMEOUT) as client:
            key = new_key()
            client.sendall(request("GET", "/pid", upgrade_headers(key)))
            head = b""
            while b"\r\n\r\n" not in head:
                head += client.recv(4096)
            assert head.startswith(b"HTTP/1.1 101 "), head
            began = time.monotonic()
            process.terminate()
            run(lambda: until(lambda: "SIGTERM: draining every worker" in process.log(), "drain"))
            run(
                lambda: until(
                    lambda: "] shutting down: 1 connections open" in process.log(),
                    "the drain waits for the client",
                )
            )
            process.terminate()
            status = process.wait_exit(TIMEOUT)
        assert time.monotonic() - began < grace / 2
    log = process.log()
    assert status == 0, log
    assert "SIGTERM: stopping now every worker" in log
    # The worker holding the client stops now; the other had drained already.
    holder = re.search(r"pid (\d+)\] shutting down: 1 connections open", log)
    assert holder is not None, log
    assert f"pid {holder[1]}] SIGQUIT: stopping now" in log
    assert f"(pid {holder[1]}) exited with status 0" in log
    assert "shutdown timeout" not in log
    assert log.rstrip().endswith("gateway.supervisor: stopped (exit status 0)")
