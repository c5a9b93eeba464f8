"""Operating the gateway through the real server (issue 11): JSON log lines, the access log,
refused handshakes in the log, SIGHUP reloads under live sessions (one process and
``--workers``), ``gateway reload`` through the pid file."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from tests.support.cli import EXIT_CONFIG, cli
from tests.support.gateway_config import config_data, write_config
from tests.support.gateway_process import GatewayProcess
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401
from tests.support.timeouts import TIMEOUT

SCENARIO_TIMEOUT = 30.0


def wait_for(process: GatewayProcess, predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {TIMEOUT} s: {what}\n{process.log()}")
        time.sleep(0.02)


def logged(process: GatewayProcess, text: str) -> Callable[[], bool]:
    return lambda: any(text in line for line in process.lines)


def get(process: GatewayProcess, path: str, headers: dict[str, str] | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", process.port, timeout=TIMEOUT)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def run(scenario: Callable[[], Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(scenario(), SCENARIO_TIMEOUT)

    return asyncio.run(bounded())


def json_lines(process: GatewayProcess) -> list[dict[str, Any]]:
    """Every line of the log, each parsed as one JSON object (a line that is not fails)."""
    records = []
    for line in process.lines:
        record = json.loads(line)
        assert isinstance(record, dict), line
        records.append(record)
    return records


# --------------------------------------------------------------------------- logs


def test_json_log_lines_carry_the_structured_fields(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", config_data({"log.access": True}))
    with GatewayProcess.serve(config, "--log-format", "json", "--log-level", "Info") as process:

        async def scenario() -> None:
            async with connect(process.ws_url("/echo"), proxy=None, open_timeout=TIMEOUT) as ws:
                await ws.send("hello")
                assert await ws.recv() == "hello"
            with pytest.raises(InvalidStatus) as refused:
                async with connect(
                    process.ws_url("/echo"), proxy=None, origin=Origin("https://evil.example")
                ):
                    pass
            assert refused.value.response.status_code == 403

        run(scenario)
        assert get(process, "/healthz") == 200
        assert get(process, "/no-such-file.txt") == 404
        wait_for(process, logged(process, '"closed"'), "the session's closed line")
        wait_for(process, logged(process, "no-such-file"), "the 404's access line")
        records = json_lines(process)  # every line is one JSON object

    for record in records:
        assert {"ts", "level", "logger", "event"} <= record.keys(), record
        assert record["ts"].endswith("Z") and len(record["ts"]) == len("2024-01-01T00:00:00.000Z")
    # One INFO line per session, when it ends (its "open" line is DEBUG).
    assert not any(r["event"].startswith("open /echo") for r in records)
    closed = next(r for r in records if r["event"] == "closed")
    assert (closed["mount"], closed["path"]) == ("echo", "/echo")
    assert len(closed["session"]) == 12
    assert closed["remote"].startswith("127.0.0.1:")
    assert closed["code"] == 1000 and closed["reason"] == ""
    assert isinstance(closed["duration_ms"], float) and closed["duration_ms"] >= 0
    health = next(r for r in records if r["logger"] == "gateway.access" and r["path"] == "/healthz")
    assert (health["method"], health["status"], health["event"]) == ("GET", 200, "request")
    assert health["bytes"] > len("ok\n") and health["duration_ms"] >= 0
    miss = next(r for r in records if r.get("path") == "/no-such-file.txt")
    assert miss["status"] == 404
    # The Origin 403 is logged, with the Origin received.
    refusal = next(r for r in records if r["event"].startswith("refused handshake"))
    assert refusal["status"] == 403 and refusal["path"] == "/echo"
    assert refusal["origin"] == "https://evil.example"
    assert all(r["level"] in ("INFO", "WARNING") for r in records)


def test_text_format_writes_the_same_fields(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", config_data({"log.access": True}))
    with GatewayProcess.serve(config) as process:
        assert get(process, "/healthz") == 200
        wait_for(process, logged(process, "gateway.access"), "the access line")
        line = next(line for line in process.lines if "gateway.access" in line)
    assert " request " in line
    for field in ("method=GET", "path=/healthz", "status=200", "bytes=", "duration_ms="):
        assert field in line, line


def test_access_log_off_writes_no_access_line(gateway_process: GatewayProcess) -> None:
    before = len(gateway_process.lines)
    assert get(gateway_process, "/healthz") == 200
    assert get(gateway_process, "/nothing-here") == 404
    time.sleep(0.2)
    assert not any("gateway.access" in line for line in gateway_process.lines[before:])


def test_log_level_in_any_case_and_bad_ones_refused() -> None:
    result = cli("serve", "--log-level", "loud")
    assert result.returncode == 2
    assert "expected one of DEBUG, INFO" in result.stderr


# --------------------------------------------------------------------------- reload


def reload_config(tmp_path: Path, **changes: object) -> dict[str, Any]:
    return config_data(
        {
            "server.shutdown_timeout": 0.5,
            "server.pid_file": str(tmp_path / "gateway.pid"),
            "plugins.old": {"path": "/old", "use": "plugins.echo:echo"},
            **changes,
        }
    )


def test_sighup_reloads_under_live_sessions(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    write_config(path, reload_config(tmp_path))
    with GatewayProcess.serve(path) as process:
        pid_file = tmp_path / "gateway.pid"
        assert int(pid_file.read_text()) == process.pid

        async def scenario() -> None:
            async with (
                connect(process.ws_url("/echo"), proxy=None, open_timeout=TIMEOUT) as kept,
                connect(process.ws_url("/old"), proxy=None, open_timeout=TIMEOUT) as removed,
            ):
                await kept.send("before")
                assert await kept.recv() == "before"
                # A new mount appears, /old goes, /echo gets a smaller message size.
                data = reload_config(tmp_path, **{"plugins.old": None})
                data["plugins"]["fresh"] = {"path": "/fresh", "use": "plugins.echo:echo"}
                data["plugins"]["echo"]["max_message_size"] = 16
                write_config(path, data)
                result = cli("reload", "--config", str(path))  # SIGHUP through the pid file
                assert result.returncode == 0, result.stderr
                await asyncio.to_thread(wait_for, process, logged(process, "reloaded"), "reload")
                # The open /echo session carries on, on the settings it started with.
                await kept.send("x" * 100)
                assert await kept.recv() == "x" * 100
                async with connect(process.ws_url("/fresh"), proxy=None) as fresh:
                    await fresh.send("new")
                    assert await fresh.recv() == "new"
                async with connect(process.ws_url("/echo"), proxy=None) as later:
                    await later.send("x" * 100)  # the new limit, for new sessions
                    with pytest.raises(ConnectionClosed) as too_big:
                        await later.recv()
                    assert too_big.value.rcvd is not None and too_big.value.rcvd.code == 1009
                # The removed mount's session: 1001 after shutdown_timeout.
                with pytest.raises(ConnectionClosed) as closed:
                    await removed.recv()
                assert closed.value.rcvd is not None
                assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
                    1001,
                    "endpoint removed",
                )
                # A broken config changes nothing, and says which key is wrong.
                broken = reload_config(tmp_path, **{"plugins.echo.max_message_size": "big"})
                write_config(path, broken)
                process.signal(signal.SIGHUP)
                await asyncio.to_thread(
                    wait_for, process, logged(process, "reload failed"), "the failed reload"
                )
                await kept.send("after")
                assert await kept.recv() == "after"
                async with connect(process.ws_url("/fresh"), proxy=None) as still:
                    await still.send("still")
                    assert await still.recv() == "still"

        run(scenario)
        failed = next(line for line in process.lines if "reload failed" in line)
        assert "plugins.echo.max_message_size: expected int, got string" in failed
        assert get(process, "/healthz") == 200
    assert not (tmp_path / "gateway.pid").exists()  # removed at exit


def test_reload_without_a_pid_file_is_a_config_error(tmp_path: Path) -> None:
    path = write_config(tmp_path / "config.toml", config_data())
    result = cli("reload", "--config", str(path))
    assert result.returncode == EXIT_CONFIG
    assert "server.pid_file" in result.stderr
    stale = tmp_path / "stale.pid"
    stale.write_text("999999999\n")
    result = cli("reload", "--pid-file", str(stale))
    assert result.returncode == 1
    assert "no process 999999999" in result.stderr


def test_workers_reload_reaches_every_worker(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    path = tmp_path / "config.toml"
    write_config(path, config_data({"broker.url": redis_server.url}))
    with GatewayProcess.serve(path, "--workers", "2") as process:
        wait_for(process, lambda: sum("listening on" in x for x in process.lines) >= 3, "workers")
        data = config_data({"broker.url": redis_server.url})
        data["plugins"]["fresh"] = {"path": "/fresh", "use": "plugins.echo:echo"}
        write_config(path, data)
        process.signal(signal.SIGHUP)
        for worker in (1, 2):
            wait_for(
                process,
                lambda w=worker: any(  # type: ignore[misc]
                    f"[worker {w} " in line and "reloaded" in line for line in process.lines
                ),
                f"worker {worker}'s reload",
            )

        async def scenario() -> None:
            for _ in range(6):  # whichever worker accepts, /fresh is there
                async with connect(process.ws_url("/fresh"), proxy=None) as ws:
                    await ws.send("hi")
                    assert await ws.recv() == "hi"

        run(scenario)
