"""Proxy benchmark: a small page from the legacy site, directly and through the gateway.

    .venv/bin/python bench/proxy.py [--duration 10] [--connections 20]
    .venv/bin/python bench/proxy.py --against OTHER_CHECKOUT [--rounds 3] [--post-bytes 1024]
                                    [--pool-size N]

With ``--against`` it is an A/B run instead: the gateway from this checkout and from another
one (say a worktree of the commit before a change: ``git worktree add /tmp/before HEAD~1``)
front the same site (on CPU 1 with wrk), measured alternately ``--rounds`` times (the order
swapping every round) for ``GET /form`` and for a ``POST /form`` with a ``--post-bytes``
body; the medians of the gateway's CPU µs per request are printed side by side with their
ratio and the median of the rounds' ratios ("paired").  ``--pool-size`` sets
``proxy.pool_size`` for both (else each tree's default).

Starts the example legacy site (``examples/legacy/app.py`` under uvicorn) and a gateway that
fronts it (``[proxy] upstream``), each pinned to CPU 0 with ``taskset`` when available, then
runs ``wrk`` (Debian's package; pinned to CPU 1) against ``GET /form`` on each, in the same run,
and prints requests/s for both and their ratio, with the CPU each server used.  Through the
gateway a request costs the gateway's work *plus* the site's, so the ratio shows what fronting
costs end to end; "gateway CPU per request" isolates the gateway's share.  Installs nothing:
if ``wrk`` is missing it says how to get it (``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = "/form"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pinned(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if shutil.which("taskset") else argv


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_http(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {PAGE} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                if s.recv(12).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"nothing answered 200 on port {port} within {timeout} s")


def start(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    # Drain stderr so a chatty server never blocks on a full pipe.
    threading.Thread(target=lambda: proc.stderr and proc.stderr.read(), daemon=True).start()
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wrk(
    port: int, duration: float, connections: int, pids: list[int], script: str | None = None
) -> tuple[float, list[float]]:
    """Requests/s, and the CPU seconds each pid used during the run (``script``: a wrk Lua
    script, e.g. to POST)."""
    before = [cpu_seconds(p) for p in pids]
    extra = ["-s", script] if script else []
    out = subprocess.run(
        pinned(
            1,
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(duration))}s",
                *extra,
                f"http://127.0.0.1:{port}{PAGE}",
            ],
        ),
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    used = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    if match is None:
        raise SystemExit(f"could not read wrk's output:\n{out}")
    if errors:
        print(f"warning: {errors.group(0)}", file=sys.stderr)
    return float(match.group(1)), used


def start_gateway(tree: Path, config: Path) -> subprocess.Popen[bytes]:
    """A gateway from the checkout ``tree`` (its own ``gateway`` package first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
    proc = subprocess.Popen(
        pinned(0, [*argv, "--log-level", "WARNING"]),
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    threading.Thread(target=lambda: proc.stderr and proc.stderr.read(), daemon=True).start()
    return proc


def compare(args: argparse.Namespace) -> int:
    """A/B: this checkout's gateway against ``args.against``'s, same site, alternating (the
    order swaps every round); the site on CPU 1 with wrk, so CPU 0 holds only the gateway
    measured.  Prints the medians and the median of each round's ratio (a shared machine's
    load moves both sides of a round alike)."""
    trees = {"this": REPO, "other": Path(args.against).resolve()}
    site_port = free_port()
    site = start(pinned(1, uvicorn_argv(site_port)))
    body = "value=" + "x" * max(0, args.post_bytes - len("value="))
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            f'wrk.body = "{body}"\n'
            'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
        )
        gateways = {}
        try:
            wait_http(site_port)
            for name, tree in trees.items():
                port = free_port()
                config = Path(tmp) / f"{name}.toml"
                pool = "" if args.pool_size is None else f"pool_size = {args.pool_size}\n"
                config.write_text(
                    f'[server]\nlisten = ["127.0.0.1:{port}"]\n'
                    f'[proxy]\nupstream = "http://127.0.0.1:{site_port}"\n{pool}'
                )
                gateways[name] = (start_gateway(tree, config), port)
                wait_http(port)
            for proc, port in gateways.values():  # warm-up
                wrk(port, 1, args.connections, [proc.pid])
            for round_ in range(args.rounds):
                order = list(gateways.items())
                if round_ % 2:
                    order.reverse()
                for job, lua in (("GET", None), ("POST", str(script))):
                    for name, (proc, port) in order:
                        rate, (gw_cpu,) = wrk(
                            port, args.duration, args.connections, [proc.pid], lua
                        )
                        results.setdefault((job, name), []).append(
                            gw_cpu / max(rate * args.duration, 1) * 1e6
                        )
        finally:
            for proc, _ in gateways.values():
                stop(proc)
            stop(site)
    print(
        f"A/B: this checkout vs {trees['other']}, {args.connections} connections, "
        f"{args.duration:.0f} s x {args.rounds} rounds, medians "
        "(gateways on CPU 0, site and wrk on CPU 1)"
    )
    print(
        f"{'gateway CPU µs/request':26} {'this':>8} {'other':>8} {'this/other':>11} {'paired':>7}"
    )
    for job in ("GET", "POST"):
        this, other = (statistics.median(results[(job, n)]) for n in ("this", "other"))
        paired = statistics.median(
            a / b for a, b in zip(results[(job, "this")], results[(job, "other")], strict=True)
        )
        label = f"{job} /form" + (f" ({args.post_bytes} B body)" if job == "POST" else "")
        print(f"{label:26} {this:8.0f} {other:8.0f} {this / other:11.3f} {paired:7.3f}")
    return 0


def uvicorn_argv(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "examples.legacy.app:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--against", help="another checkout: an A/B run of the two gateways")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--post-bytes", type=int, default=1024)
    parser.add_argument(
        "--pool-size", type=int, help="proxy.pool_size for both gateways (default: each's own)"
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    if args.against:
        return compare(args)
    site_port, gw_port = free_port(), free_port()
    site = start(pinned(0, uvicorn_argv(site_port)))
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "proxy-bench.toml"
        config.write_text(
            f'[server]\nlisten = ["127.0.0.1:{gw_port}"]\n'
            f'[proxy]\nupstream = "http://127.0.0.1:{site_port}"\n'
        )
        gateway = start(
            pinned(
                0,
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "serve",
                    "--config",
                    str(config),
                    "--log-level",
                    "WARNING",
                ],
            )
        )
        try:
            wait_http(site_port)
            wait_http(gw_port)
            direct, (site_cpu_direct,) = wrk(site_port, args.duration, args.connections, [site.pid])
            proxied, (site_cpu, gw_cpu) = wrk(
                gw_port, args.duration, args.connections, [site.pid, gateway.pid]
            )
        finally:
            stop(gateway)
            stop(site)
    print(
        f"GET {PAGE}, {args.connections} connections, {args.duration:.0f} s each "
        f"(servers on CPU 0, wrk on CPU 1)"
    )
    print(f"{'':24} {'requests/s':>12} {'site CPU':>9} {'gateway CPU':>12}")
    print(f"{'legacy site directly':24} {direct:12,.0f} {site_cpu_direct / args.duration:9.0%}")
    print(
        f"{'through the gateway':24} {proxied:12,.0f} {site_cpu / args.duration:9.0%} "
        f"{gw_cpu / args.duration:12.0%}"
    )
    print(f"ratio (gateway / direct): {proxied / direct:.2f}")
    per_request = gw_cpu / max(proxied * args.duration, 1) * 1e6
    print(f"gateway CPU per proxied request: {per_request:.0f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
