"""``serve --workers 2`` against one process: WebSocket handshakes per second, same run.

    python bench/workers.py                       # 3 alternating rounds of 3000 handshakes
    python bench/workers.py --count 200 --rounds 1   # a smoke run

Both gateways run ``bench/config.toml`` plus a ``[broker]`` on a local ``redis-server``
(started here; more than one worker needs one, and the single process gets it too so both
pay the same per-process broker cost).  The Node load generator (``loadgen.js
handshake --raw`` on ``/echo-open``, as ``bench/run.py``) opens and closes ``--count``
connections, ``--concurrency`` at a time.  Rounds alternate 1, 2, 1, 2... so machine noise
hits both alike; the table gives medians, gateway CPU (supervisor and workers added up, from
/proc) per handshake, and the ratio of 2 workers to 1.

On a 2-core machine this cannot show what two workers are worth: nothing is pinned (two
workers need both cores), so the load generator, Redis and both workers share two cores, and
the ratio is bounded well below 2x by the client's own CPU.  It shows that the workers share
the load and what the supervisor costs; a machine with spare cores for the client is needed
for the scaling figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT)]

from harness import loadgen  # noqa: E402  (bench/harness/: the pieces bench/run.py is made of)
from harness.common import CONFIG, RESULTS, say, tail  # noqa: E402
from harness.machine import Pinning, raise_nofile  # noqa: E402
from harness.servers import HOST, START_TIMEOUT, RunningServer, ServerSpec, start_server  # noqa: E402

from tests.support.redis_server import RedisServer  # noqa: E402

READY = re.compile(r"\[worker \d+ pid \d+\] listening on")
UNPINNED = Pinning((), (), "nothing pinned: two workers need both cores")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children (the supervisor's workers)."""
    total = 0.0
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):  # children of every thread (trio spawns
        try:  # processes from a worker thread)
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wait_for_workers(server: RunningServer, workers: int) -> None:
    """The supervisor logs its address before its workers start: wait until each of them
    logs its own, so the run does not time their start-up."""
    if workers == 1:
        return
    deadline = time.monotonic() + START_TIMEOUT
    while len(READY.findall(server.log.read_text(errors="replace"))) < workers:
        server.check_alive()
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {workers} workers not listening:\n{tail(server.log)}")
        time.sleep(0.05)


def handshakes(
    generator: loadgen.LoadGen, server: RunningServer, count: int, concurrency: int
) -> dict[str, Any]:
    """One loadgen handshake run; its JSON result plus the gateway's CPU seconds."""
    argv = [
        "node",
        str(generator.script),
        "handshake",
        "--url",
        server.url("/echo-open"),
        "--raw",
        "--count",
        str(count),
        "--concurrency",
        str(concurrency),
        "--label",
        server.spec.name,
    ]
    cpu_before = tree_cpu_seconds(server.pid)
    done = subprocess.run(
        argv,
        cwd=generator.dir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=count / 20 + 60,
        check=False,
    )
    cpu = tree_cpu_seconds(server.pid) - cpu_before
    server.check_alive()
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"bench: loadgen gave no result (exit {done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["gateway_cpu_s"] = round(cpu, 3)
    say(done.stderr.strip())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000, help="handshakes per run")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of 1 and 2")
    loadgen.add_option(parser)
    args = parser.parse_args(argv)
    generator = loadgen.prepare(Path(args.loadgen))
    raise_nofile()
    env = {**os.environ, "GATEWAY_SECRET": secrets.token_urlsafe(32), "PYTHONUNBUFFERED": "1"}
    results: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    with (
        tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp,
        RedisServer(Path(tmp) / "redis") as redis,
    ):
        config = Path(tmp) / "config.toml"
        config.write_text(
            CONFIG.read_text() + f'\n[broker]\nurl = "{redis.url}"\n', encoding="utf-8"
        )
        for _ in range(args.rounds):
            for workers in (1, 2):
                command = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
                command += ["--listen", f"{HOST}:0", "--workers", str(workers)]
                name = f"gateway-workers-{workers}"
                spec = ServerSpec(name, tuple(command), "/echo", "/echo-open", "", False)
                logdir = RESULTS / "workers"
                with start_server(spec, env, UNPINNED, logdir) as server:
                    wait_for_workers(server, workers)
                    result = handshakes(generator, server, args.count, args.concurrency)
                    results[workers].append(result)
    print(table(results, args))
    return 0


def table(results: dict[int, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    rows = [
        f"handshakes: {args.count} per run, concurrency {args.concurrency}, {args.rounds} "
        f"round(s), raw client on /echo-open; {os.cpu_count()} CPUs, {UNPINNED.note}",
        "",
        "| workers | handshakes/s (median) | gateway CPU-ms per handshake | errors |",
        "|---|---|---|---|",
    ]
    medians = {}
    for workers, runs in results.items():
        rate = statistics.median(r.get("handshakes_per_s") or 0 for r in runs)
        cost = statistics.median(1000 * r["gateway_cpu_s"] / max(1, r["completed"]) for r in runs)
        errors = sum(r.get("errors") or 0 for r in runs)
        medians[workers] = rate
        rows.append(f"| {workers} | {rate:.0f} | {cost:.3f} | {errors} |")
    ratio = medians[2] / medians[1] if medians[1] else float("nan")
    rows += [
        "",
        f"2 workers / 1: {ratio:.2f}x handshakes/s (a 2-core machine shares its cores with the "
        "load generator and Redis: this bounds the ratio well below 2x)",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
