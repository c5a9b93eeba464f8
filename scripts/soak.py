"""Soak test: hold N concurrent WebSockets on a real gateway for T seconds with periodic echoes.

Not part of the test suite (it takes minutes).  Run it with the project's virtualenv:

    .venv/bin/python scripts/soak.py                      # 5000 connections, 60 s
    .venv/bin/python scripts/soak.py --conns 1000 --duration 10

It starts ``gateway serve`` on ``config.toml`` (port 0) as a subprocess, opens the connections
to ``/echo`` (bounded concurrency), and every connection sends a message every ``--interval``
seconds and checks the echo.  At the end it prints the echo count, every failure (a drop is any
connection closed or an echo missing or wrong), and the gateway's RSS per connection measured
from /proc (RSS with all connections open minus RSS before the first connection).  Exit status 0
means zero drops.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import trio
import trio_websocket

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Stats:
    expected: int
    opened: int = 0
    echoes: int = 0
    failures: list[str] = field(default_factory=list)
    settled: trio.Event = field(default_factory=trio.Event)  # every connection opened or failed

    def open(self) -> None:
        self.opened += 1
        self._check()

    def fail(self, why: str) -> None:
        self.failures.append(why)
        self._check()

    def _check(self) -> None:
        if self.opened + len(self.failures) >= self.expected:
            self.settled.set()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_gateway() -> tuple[subprocess.Popen[str], str]:
    def raise_nofile() -> None:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            "config.toml",
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "WARNING",
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=raise_nofile,
    )
    assert proc.stderr is not None
    found: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            match = re.search(r"listening on (http://\S+)", line)
            if match and not found:
                found.append(match.group(1))
                ready.set()
            elif "WARNING" in line or "ERROR" in line:
                print("gateway:", line.rstrip(), file=sys.stderr)
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(30) or not found:
        proc.kill()
        raise SystemExit("the gateway did not start")
    return proc, found[0].replace("http://", "ws://")


async def client(
    url: str, n: int, stats: Stats, interval: float, stop: trio.Event, opened: trio.Semaphore
) -> None:
    try:
        async with opened:
            ws_cm = trio_websocket.open_websocket_url(url, message_queue_size=4)
            ws = await ws_cm.__aenter__()
        stats.open()
        try:
            # Spread the echoes over the interval so the load is steady.
            await trio.sleep(random.random() * interval)
            seq = 0
            while not stop.is_set():
                message = f"{n}:{seq}"
                await ws.send_message(message)
                with trio.fail_after(10):
                    reply = await ws.get_message()
                if reply != message:
                    stats.fail(f"conn {n}: sent {message!r}, got {reply!r}")
                    return
                stats.echoes += 1
                seq += 1
                with trio.move_on_after(interval):
                    await stop.wait()
        finally:
            await ws_cm.__aexit__(None, None, None)
    except (
        trio_websocket.ConnectionClosed,
        trio_websocket.HandshakeError,
        OSError,
        trio.TooSlowError,
    ) as exc:
        stats.fail(f"conn {n}: {type(exc).__name__}: {exc}")


async def soak(url: str, pid: int, conns: int, duration: float, interval: float) -> Stats:
    stats = Stats(conns)
    stop = trio.Event()
    base = rss_kib(pid)
    async with trio.open_nursery() as nursery:
        limiter = trio.Semaphore(100)  # connect at most 100 at a time
        for n in range(conns):
            nursery.start_soon(client, f"{url}/echo", n, stats, interval, stop, limiter)
        with trio.move_on_after(120):
            await stats.settled.wait()
        print(f"{stats.opened} connections open", file=sys.stderr)
        await trio.sleep(min(5.0, duration))
        full = rss_kib(pid)
        per_conn = (full - base) / max(stats.opened, 1)
        print(
            f"gateway RSS: {base} KiB idle, {full} KiB with {stats.opened} connections "
            f"= {per_conn:.1f} KiB per connection",
            file=sys.stderr,
        )
        await trio.sleep(max(0.0, duration - 5.0))
        stop.set()
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=5000)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between echoes")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.conns + 100:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is too low for {args.conns} connections")
    proc, url = start_gateway()
    try:
        stats = trio.run(soak, url, proc.pid, args.conns, args.duration, args.interval)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    drops = args.conns - stats.opened + len(stats.failures)
    print(f"connections: {stats.opened}/{args.conns}; echoes: {stats.echoes}; drops: {drops}")
    for failure in stats.failures[:20]:
        print("  ", failure)
    return 0 if drops == 0 else 1


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
