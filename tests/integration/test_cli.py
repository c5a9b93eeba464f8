"""The command line, run as a subprocess: ``python -m gateway check | serve | sign-cookie``."""

from __future__ import annotations

import asyncio
import http.client
import re
import subprocess
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway.core import cookies
from tests.support.cli import EXIT_CONFIG, cli
from tests.support.gateway_config import TEST_SECRET, config_data, write_config
from tests.support.gateway_process import GatewayProcess
from tests.support.timeouts import TIMEOUT


def test_check_accepts_the_shipped_config() -> None:
    result = cli("check", "--config", "config.toml")
    assert result.returncode == 0, result.stderr
    assert re.match(r"config\.toml: OK \(\d+ mounts: ", result.stdout), result.stdout
    for mount in ("echo=/echo", "foo=/foo", "bar=/bar", "chat=/chat/{room}", "hello=/hello"):
        assert mount in result.stdout
    assert result.stderr == ""


def test_check_loads_plugins_relative_to_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "local_plugin_for_test.py").write_text(
        "async def handler(ws, session):\n    await ws.send_message('local')\n"
    )
    changes = {"plugins.local": {"path": "/local", "use": "local_plugin_for_test:handler"}}
    config = write_config(tmp_path / "gateway.toml", config_data(changes))
    result = cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    # The test-only plugins (tests.integration.wire_plugins) resolve too, via cwd.
    assert "boom=/boom" in result.stdout
    assert "local=/local" in result.stdout


BROKEN_MODULE = "raise RuntimeError('broken on purpose')\n"

BAD_CONFIGS: dict[str, tuple[dict[str, object], list[str]]] = {
    "unknown key": (
        {"server.lisen": ["127.0.0.1:0"]},
        ["server.lisen: unknown key"],
    ),
    "wrong type": (
        {"plugins.chat.options.max_message_chars": "x"},
        ["plugins.chat.options.max_message_chars: expected int, got string"],
    ),
    "below minimum": (
        {"plugins.chat.options.max_message_chars": 0},
        ["plugins.chat.options.max_message_chars: must be >= 1"],
    ),
    "missing plugin module": (
        {"plugins.ghost": {"path": "/ghost", "use": "no_such_gateway_plugin:Thing"}},
        ["plugins.ghost.use: no module named 'no_such_gateway_plugin'"],
    ),
    "missing plugin attribute": (
        {"plugins.ghost": {"path": "/ghost", "use": "plugins.echo:nothing_here"}},
        ["plugins.ghost.use: module 'plugins.echo' has no attribute 'nothing_here'"],
    ),
    "plugin import error": (
        {"plugins.broken": {"path": "/broken", "use": "broken_plugin_for_test:Thing"}},
        [
            "plugins.broken.use: importing 'broken_plugin_for_test' failed",
            "RuntimeError: broken on purpose",
        ],
    ),
    "duplicate path": (
        {"plugins.echo2": {"path": "/echo", "use": "plugins.echo:echo"}},
        ["plugins.echo2.path: '/echo' duplicates plugins.echo.path '/echo'"],
    ),
    "overlapping paths": (
        {"plugins.lobby": {"path": "/chat/lobby", "use": "plugins.echo:echo"}},
        ["plugins.lobby.path: '/chat/lobby' overlaps plugins.chat.path '/chat/{room}'"],
    ),
    "bad listen address": (
        {"server.listen": ["localhost"]},
        ["server.listen[0]: expected 'host:port'"],
    ),
    "bad listen port": (
        {"server.listen": ["127.0.0.1:99999"]},
        ["server.listen[0]: port must be 0-65535"],
    ),
    "auth without secret": (
        {"plugins.chat.auth": "required"},
        ["auth.secret_env: environment variable GATEWAY_SECRET is not set"],
    ),
}


def _bad_config(tmp_path: Path, case: str) -> Path:
    (tmp_path / "broken_plugin_for_test.py").write_text(BROKEN_MODULE)
    changes, _ = BAD_CONFIGS[case]
    return write_config(tmp_path / "bad.toml", config_data(changes))


def _config_error(result: subprocess.CompletedProcess[str], case: str) -> str:
    """Check the run failed as a config error naming the key; return the message line."""
    _, expected = BAD_CONFIGS[case]
    assert result.returncode == EXIT_CONFIG, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if "config error" in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gateway: config error: "), lines[0]
    for text in expected:
        assert text in lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_check_and_serve_refuse_a_bad_config_alike(tmp_path: Path, case: str) -> None:
    config = str(_bad_config(tmp_path, case))
    checked = cli("check", "--config", config)
    message = _config_error(checked, case)
    assert checked.stdout == ""

    served = cli("serve", "--config", config, "--listen", "127.0.0.1:0")
    assert _config_error(served, case) == message
    assert "listening on" not in served.stderr


def test_check_missing_config_file(tmp_path: Path) -> None:
    result = cli("check", "--config", str(tmp_path / "absent.toml"))
    assert result.returncode == EXIT_CONFIG
    assert "config file not found" in result.stderr
    assert "absent.toml" in result.stderr


def test_serve_refuses_a_bad_listen_override() -> None:
    result = cli("serve", "--listen", "nowhere")
    assert result.returncode == EXIT_CONFIG
    assert "--listen[0]: expected 'host:port'" in result.stderr
    assert "listening on" not in result.stderr


def test_sign_cookie_prints_a_cookie_verify_accepts() -> None:
    result = cli("sign-cookie", "--user", "alice", env={"GATEWAY_SECRET": TEST_SECRET})
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert result.stdout == line + "\n"
    name, _, value = line.partition("=")
    assert name == "gateway_session"  # ready for a Cookie header
    principal = cookies.verify(cookies.KeyRing.parse(TEST_SECRET), value, time.time(), 86400)
    assert isinstance(principal, cookies.Principal), principal
    assert principal.user == "alice"
    other_ring = cookies.KeyRing.parse("a-different-secret-0123456789")
    assert isinstance(cookies.verify(other_ring, value, time.time(), 86400), cookies.CookieRejected)


def test_sign_cookie_without_secret_fails_clearly() -> None:
    result = cli("sign-cookie", "--user", "alice")
    assert result.returncode == EXIT_CONFIG  # like every other configuration error
    assert result.stdout == ""
    assert "GATEWAY_SECRET" in result.stderr
    assert "not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_logs_the_port_it_listens_on() -> None:
    process = GatewayProcess(["serve", "--listen", "127.0.0.1:0"])  # config.toml from cwd
    try:
        url = process.wait_ready()
        assert url.startswith("http://127.0.0.1:")
        assert process.port != 0
        connection = http.client.HTTPConnection("127.0.0.1", process.port, timeout=TIMEOUT)
        try:
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, b"ok\n")
        finally:
            connection.close()
    finally:
        assert process.stop() == 0, process.log()


def test_sigterm_closes_open_websockets_with_1001_and_exits_0() -> None:
    process = GatewayProcess(["serve", "--listen", "127.0.0.1:0"])  # shutdown_timeout = 10
    grace = 10.0
    try:
        process.wait_ready()

        async def scenario() -> tuple[int, str, float]:
            async with connect(
                process.ws_url("/echo"), proxy=None, compression=None, open_timeout=TIMEOUT
            ) as ws:
                await ws.send("before shutdown")
                assert await ws.recv() == "before shutdown"
                started = time.monotonic()
                process.terminate()
                with pytest.raises(ConnectionClosed) as info:
                    await ws.recv()
                assert info.value.rcvd is not None
                return info.value.rcvd.code, info.value.rcvd.reason, started

        async def bounded() -> tuple[int, str, float]:
            return await asyncio.wait_for(scenario(), TIMEOUT)

        code, reason, started = asyncio.run(bounded())
        assert (code, reason) == (1001, "server shutting down")
        assert process.wait_exit(grace) == 0, process.log()
        assert time.monotonic() - started < grace
        log = process.log()
        assert "SIGTERM: draining" in log
        assert "shutdown timeout" not in log
        assert log.rstrip().endswith("gateway.server: stopped")
    finally:
        process.stop()


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"gateway \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout


def test_check_lists_every_error(tmp_path: Path) -> None:
    changes = {"server.lisen": 1, "http.max_headers": 0, "plugins.echo.max_fragments": "x"}
    config = write_config(tmp_path / "bad.toml", config_data(changes))
    result = cli("check", "--config", str(config))
    assert result.returncode == EXIT_CONFIG
    for path in ("server.lisen", "http.max_headers", "plugins.echo.max_fragments"):
        assert path in result.stderr, result.stderr


def test_check_resolves_listen_hosts_and_warns_without_mounts(tmp_path: Path) -> None:
    unresolvable = {"server.listen": ["no-such-host.invalid:8080"]}
    config = write_config(tmp_path / "dns.toml", config_data(unresolvable))
    result = cli("check", "--config", str(config))
    assert result.returncode == EXIT_CONFIG
    assert "server.listen[0]: cannot resolve 'no-such-host.invalid'" in result.stderr
    empty = write_config(tmp_path / "empty.toml", {"server": {"listen": ["127.0.0.1:0"]}})
    result = cli("check", "--config", str(empty))
    assert result.returncode == 0, result.stderr
    assert "warning: no [plugins.NAME] tables" in result.stderr


def test_a_port_in_use_names_the_address_and_is_not_a_config_error() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = cli("serve", "--listen", address)
    assert result.returncode == 1
    assert f"cannot listen on {address}: address already in use" in result.stderr
    assert "--listen" in result.stderr
    assert "config error" not in result.stderr


def test_serve_announces_its_mounts_and_url_once() -> None:
    process = GatewayProcess(["serve", "--listen", "127.0.0.1:0"])
    try:
        url = process.wait_ready()
        deadline = time.monotonic() + TIMEOUT
        while not any("open http" in line for line in process.lines):
            assert time.monotonic() < deadline, process.log()
            time.sleep(0.02)
    finally:
        process.stop()
    serving = [line for line in process.lines if "serving " in line and " mounts: " in line]
    assert len(serving) == 1
    assert f"echo ws{url.removeprefix('http')}/echo" in serving[0]
    assert sum(f"open {url}/ in a browser" in line for line in process.lines) == 1
