"""The servers under test: what each runs, starting one (pinned, its port read from its
log), watching it and stopping it; the gateway's policy credentials."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

from .common import (
    BENCH,
    CONFIG,
    GATEWAY,
    GATEWAY_BASE,
    NODE_WS,
    ROOT,
    TRIO_WS,
    WEBSOCKETS,
    fail,
    run_checked,
    say,
    tail,
)
from .machine import Pinning, raise_nofile

HOST = "127.0.0.1"
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
START_TIMEOUT = 30.0  # seconds for a server to log its port
STOP_GRACE = 15.0  # SIGTERM -> this long -> SIGKILL (the gateway drains for up to 10 s)


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    name: str
    argv: tuple[str, ...]
    echo: str  # the echo path for the `ws` client (the gateway's has the policy on)
    echo_open: str  # an echo path without policy (for the raw client)
    broadcast: str
    policy: bool  # send Cookie + Origin from the `ws` client
    cwd: Path = ROOT  # the gateway runs from its tree (``python -m gateway`` imports from cwd)
    env: tuple[tuple[str, str], ...] = ()  # added to the servers' environment


def gateway_spec(name: str, tree: Path, config: Path = CONFIG) -> ServerSpec:
    argv = (sys.executable, "-m", "gateway", "serve", "--config", str(config))
    env: tuple[tuple[str, str], ...] = ()
    if tree != ROOT:  # `python -m gateway` runs from the tree; its imports must win too
        pythonpath = os.environ.get("PYTHONPATH", "")
        env = (("PYTHONPATH", os.pathsep.join(p for p in (str(tree), pythonpath) if p)),)
    return ServerSpec(
        name, (*argv, "--listen", f"{HOST}:0"), "/echo", "/echo-open", "/broadcast", True, tree, env
    )


def server_specs(
    loadgen_dir: Path,
    tree: Path = ROOT,
    base_tree: Path | None = None,
    base_config: Path = CONFIG,
) -> dict[str, ServerSpec]:
    py = sys.executable
    listen = f"{HOST}:0"
    specs = {
        GATEWAY: gateway_spec(GATEWAY, tree),
        TRIO_WS: ServerSpec(
            TRIO_WS,
            (py, str(BENCH / "baselines" / "trio_websocket_server.py"), "--listen", listen),
            "/echo",
            "/echo",
            "/broadcast",
            False,
        ),
        WEBSOCKETS: ServerSpec(
            WEBSOCKETS,
            (py, str(BENCH / "baselines" / "websockets_server.py"), "--listen", listen),
            "/echo",
            "/echo",
            "/broadcast",
            False,
        ),
        NODE_WS: ServerSpec(
            NODE_WS,
            ("node", str(BENCH / "baselines" / "node_ws_server.js"), "--listen", listen),
            "/echo",
            "/echo",
            "/broadcast",
            False,
            loadgen_dir,  # where `ws` is installed (loadgen.prepare)
        ),
    }
    if base_tree is not None:
        specs[GATEWAY_BASE] = gateway_spec(GATEWAY_BASE, base_tree, base_config)
    return specs


@dataclasses.dataclass
class RunningServer:
    spec: ServerSpec
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"ws://{HOST}:{self.port}{path}"

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.spec.name} exited with {self.proc.returncode}; its log "
                f"({self.log}):\n{tail(self.log)}"
            )


def stop_process(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; every wait bounded."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            say(f"bench: pid {proc.pid} ignored SIGTERM for {grace:.0f} s: killing it")
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@contextlib.contextmanager
def start_server(
    spec: ServerSpec, env: dict[str, str], pin: Pinning, logdir: Path
) -> Iterator[RunningServer]:
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / f"{spec.name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*pin.server, *spec.argv],
            cwd=spec.cwd,
            env={**env, **dict(spec.env)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_nofile,
            start_new_session=True,  # Ctrl-C reaches only run.py, which stops it in order
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        port = None
        while port is None:
            match = LISTENING.search(log.read_text(errors="replace"))
            if match:
                port = int(match.group(1))
            elif proc.poll() is not None:
                raise RuntimeError(
                    f"{spec.name} exited with {proc.returncode} before listening:\n{tail(log)}"
                )
            elif time.monotonic() > deadline:
                raise RuntimeError(
                    f"{spec.name} did not log its port within {START_TIMEOUT:.0f} s:\n{tail(log)}"
                )
            else:
                time.sleep(0.05)
        yield RunningServer(spec, proc, port, log)
    finally:
        stop_process(proc)


def policy_credentials(env: dict[str, str], tree: Path) -> dict[str, str]:
    """Cookie + Origin for the gateway's policy mounts, from bench/config.toml."""
    config = tomllib.loads(CONFIG.read_text())
    cookie_name = config.get("auth", {}).get("cookie_name", "gateway_session")
    origins = config["plugins"]["echo"]["origins"]
    value = run_checked(
        [
            sys.executable,
            "-m",
            "gateway",
            "sign-cookie",
            "--user",
            "bench",
            "--config",
            str(CONFIG),
        ],
        cwd=tree,
        env=env,
        timeout=60,
    ).strip()
    if not value:
        raise fail("gateway sign-cookie printed nothing")
    # It prints "name=value" now (a Cookie header's pair); older trees printed the value.
    value = value.removeprefix(f"{cookie_name}=")
    return {"BENCH_COOKIE": f"{cookie_name}={value}", "BENCH_ORIGIN": str(origins[0])}
