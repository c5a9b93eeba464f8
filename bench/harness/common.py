"""What every bench script shares: where things are, the servers' names, messages, short
commands and the start-up checks."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
CONFIG = BENCH / "config.toml"
RESULTS = BENCH / "results"
SHIM = BENCH / "ws_headers_shim.js"

GATEWAY = "gateway"
GATEWAY_BASE = "gateway-base"  # --base-tree: the gateway from another tree, for A/B runs
TRIO_WS = "trio-websocket"
WEBSOCKETS = "websockets"
NODE_WS = "node-ws"
SERVER_NAMES = (GATEWAY, GATEWAY_BASE, TRIO_WS, WEBSOCKETS, NODE_WS)
DEFAULT_SERVERS = (GATEWAY, TRIO_WS, WEBSOCKETS, NODE_WS)
GATEWAYS = (GATEWAY, GATEWAY_BASE)


def fail(message: str) -> SystemExit:
    return SystemExit(f"bench: {message}")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def run_checked(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float,
) -> str:
    """stdout of a short command; raises SystemExit with its stderr on failure."""
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise fail(f"{' '.join(argv)}: no answer after {timeout:.0f} s") from None
    except OSError as exc:
        raise fail(f"{argv[0]}: {exc}") from None
    if done.returncode != 0:
        raise fail(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr.strip()}")
    return done.stdout


def check_python() -> None:
    missing = [
        name for name in ("gateway", "trio_websocket", "websockets") if not find_module(name)
    ]
    if missing:
        raise fail(
            f"{sys.executable} cannot import {', '.join(missing)}: run with the project's venv "
            "(. .venv/bin/activate; pip install -e '.[test]')"
        )


def find_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def interrupt_on_sigterm() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
