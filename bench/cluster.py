"""The Redis broker's cost: one ``/broadcast`` room on one process vs split over two, same run.

    python bench/cluster.py                  # 5 interleaved rounds; 1,000 subscribers
    python bench/cluster.py --subs 100 --messages 50 --rounds 1 --count 200   # a smoke run

Fan-out (``--only fanout``): the loadgen's ``fanout`` scenario, exactly as
``bench/run.py`` runs it (its ``Bench``: 1 publisher, ``--subs`` subscribers of ``/broadcast``,
one message in flight, policy headers from ``ws_headers_shim.js``), against

- **single**: today's gateway, ``bench/config.toml``, no broker;
- **cluster**: two gateways (``bench/config.toml`` plus a ``[broker]``) sharing a local
  ``redis-server`` started here on a free loopback port.  ``cluster_shim.js`` (preloaded
  through ``NODE_OPTIONS``) sends the loadgen's connections to the two gateways in turn, so
  the subscribers split evenly (the publisher, opened last, joins one of them); a message
  reaches the other gateway's half through Redis, so the last subscriber's latency is the
  broker's path.
  The shim also makes the loadgen's server CPU the sum of both gateways and redis-server over
  its measured window.

Every server process (the single gateway, both cluster gateways, every redis-server thread)
is pinned to one core and the load generator to the other, as in ``bench/run.py``: the
cluster gets the single process's core budget, so its CPU per delivery and its latency are
compared on equal terms (and its three processes take turns on that core).  Rounds alternate
single/cluster (ABBA), on servers started once; the table gives medians and ratios.

Workers (``--only workers``): ``serve --workers 2`` against 1, handshakes/s and gateway CPU
per handshake, with ``bench/workers.py``'s pieces and the same Redis (see that file: nothing is
pinned, and a 2-core machine bounds the ratio well below 2x).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT)]

import workers  # noqa: E402  (bench/workers.py: the --workers 2 vs 1 handshake runs)
from harness import loadgen  # noqa: E402  (bench/harness/: the pieces bench/run.py is made of)
from harness.common import CONFIG, RESULTS, check_python, fail, interrupt_on_sigterm, say, tail  # noqa: E402
from harness.figures import Figure, field, fmt_value, median_cell, per_cpu, select  # noqa: E402
from harness.machine import Pinning, describe_machine, machine_info, pinning, source_fingerprint  # noqa: E402
from harness.params import FULL  # noqa: E402
from harness.scenarios import Bench  # noqa: E402
from harness.servers import (  # noqa: E402
    HOST,
    START_TIMEOUT,
    RunningServer,
    ServerSpec,
    policy_credentials,
    start_server,
)

from tests.support.redis_server import RedisServer  # noqa: E402

SINGLE = "single"
CLUSTER = "cluster"
NODES = ("node-a", "node-b")
CLUSTER_SHIM = BENCH / "cluster_shim.js"
BROKER_UP = "broker: Redis {} connection up"
DELIVERIES_TARGET = 0.7  # cluster / single deliveries per CPU-second, at least
P99_BUDGET_MS = 5.0  # what the broker may add to the last subscriber's p99
PARTS = ("fanout", "workers")


def require_redis() -> None:
    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        raise fail(
            "redis-server not found: the cluster benchmark starts its own on a free loopback "
            "port. Install Debian's redis-server (`scripts/setup --test` does: apt-get install "
            "redis-server)"
        )


def cluster_config(folder: Path, redis: RedisServer) -> Path:
    """``bench/config.toml`` plus a ``[broker]`` on ``redis`` (same policy, same cookie)."""
    config = folder / "cluster.toml"
    config.write_text(
        CONFIG.read_text() + f'\n[broker]\nurl = "{redis.url}"\nprefix = "bench"\n',
        encoding="utf-8",
    )
    return config


def gateway_spec(name: str, config: Path, *extra: str) -> ServerSpec:
    argv = (sys.executable, "-m", "gateway", "serve", "--config", str(config), "--listen")
    return ServerSpec(name, (*argv, f"{HOST}:0", *extra), "/echo", "/echo-open", "/broadcast", True)


def pin_all_threads(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus``: redis-server is started without ``taskset``
    (by the tests' RedisServer) and has its background threads by then."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            os.sched_setaffinity(int(task.name), cpus)


def wait_broker_up(node: RunningServer) -> None:
    """Both of the node's Redis connections up (bounded): a dead broker fails loudly here
    instead of as fan-out time-outs."""
    deadline = time.monotonic() + START_TIMEOUT
    wanted = [BROKER_UP.format(kind) for kind in ("publish", "subscription")]
    while not all(w in node.log.read_text(errors="replace") for w in wanted):
        node.check_alive()
        if time.monotonic() > deadline:
            raise fail(f"{node.spec.name}: broker not connected:\n{tail(node.log)}")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    return workers.tree_cpu_seconds(pid)


@dataclasses.dataclass
class Cluster:
    nodes: list[RunningServer]
    redis: RedisServer
    report: Path  # the shim's split report

    @property
    def view(self) -> RunningServer:
        """The first node under the name "cluster": the loadgen's --url and --pid."""
        first = self.nodes[0]
        return dataclasses.replace(first, spec=dataclasses.replace(first.spec, name=CLUSTER))

    def pids(self) -> dict[str, int]:
        assert self.redis.proc is not None
        return {**{n.spec.name: n.pid for n in self.nodes}, "redis-server": self.redis.proc.pid}

    def loadgen_env(self, policy: dict[str, str]) -> dict[str, str]:
        options = f"{os.environ.get('NODE_OPTIONS', '')} --require {json.dumps(str(CLUSTER_SHIM))}"
        return {
            **policy,
            "BENCH_SPLIT_HOSTS": ",".join(f"{HOST}:{n.port}" for n in self.nodes),
            "BENCH_SPLIT_REPORT": str(self.report),
            "BENCH_CPU_PIDS": ",".join(map(str, self.pids().values())),
            "NODE_OPTIONS": options.strip(),
        }

    def check_alive(self) -> None:
        for node in self.nodes:
            node.check_alive()
        if not self.redis.running:
            raise RuntimeError(f"redis-server died; its log:\n{self.redis.log()}")


@contextlib.contextmanager
def started(
    config: Path, redis: RedisServer, env: dict[str, str], pin: Pinning, logdir: Path
) -> Iterator[tuple[RunningServer, Cluster]]:
    """The single gateway and the two-node cluster, up until the block ends."""
    assert redis.proc is not None
    if pin.server:  # ("taskset", "-c", CPU): redis-server shares the gateways' core
        pin_all_threads(redis.proc.pid, {int(pin.server[-1])})
    with contextlib.ExitStack() as stack:
        stack.callback(pin_all_threads, redis.proc.pid, os.sched_getaffinity(0))
        single = stack.enter_context(start_server(gateway_spec(SINGLE, CONFIG), env, pin, logdir))
        nodes = [
            stack.enter_context(start_server(gateway_spec(n, config), env, pin, logdir))
            for n in NODES
        ]
        for node in nodes:
            wait_broker_up(node)
        time.sleep(0.5)
        yield single, Cluster(nodes, redis, logdir / "split.json")


def fanout_rounds(b: Bench, single: RunningServer, cluster: Cluster, rounds: int) -> None:
    """``rounds`` x (single, cluster), ABBA, through ``Bench.fanout`` on the running servers."""
    policy = dict(b.policy_env)
    view = cluster.view
    b.reuse = [single, view]
    subs = b.params.fanout_subs
    for i in range(rounds):
        for name in (SINGLE, CLUSTER) if i % 2 == 0 else (CLUSTER, SINGLE):
            if name == SINGLE:
                b.policy_env = policy
                b.fanout([SINGLE])
                continue
            b.policy_env = cluster.loadgen_env(policy)
            cluster.report.unlink(missing_ok=True)
            before = {k: cpu_seconds(p) for k, p in cluster.pids().items()}
            b.fanout([CLUSTER])
            cluster.check_alive()
            record = b.runs[-1]
            record["cpu_s_whole_run"] = {
                k: round(cpu_seconds(p) - before[k], 3) for k, p in cluster.pids().items()
            }
            split = read_split(cluster.report)
            record["split"] = split
            if len(split) != len(cluster.nodes) or min(split.values()) < subs // len(split):
                problem = f"connections not split over the nodes: {split or 'no report'}"
                record["issue"] = "; ".join(x for x in (record.get("issue"), problem) if x)
    b.policy_env = policy


def read_split(report: Path) -> dict[str, int]:
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}


# ---------------------------------------------------------------- the fan-out table


def fanout_table(b: Bench) -> tuple[list[str], bool]:
    """The table's lines, and whether every figure the targets need is there."""
    p = b.params
    figures: list[tuple[str, Figure, str]] = [
        ("deliveries / server CPU-s", per_cpu("deliveries_per_s"), "deliveries"),
        ("deliveries/s", field("deliveries_per_s"), ""),
        ("last subscriber p50, ms", field("last_p50_ms"), ""),
        ("last subscriber p99, ms", field("last_p99_ms"), "p99"),
        ("server CPU, % of a core", field("server_cpu_pct"), ""),
        ("loadgen CPU, % of a core", field("client_cpu_pct"), ""),
    ]
    header = [
        "figure (median)",
        "single process",
        "2 gateways + redis",
        "cluster / single",
        "target",
    ]
    body: list[list[str]] = []
    notes: list[str] = []
    complete = True
    for metric, figure, target in figures:
        cells = {
            name: median_cell(select(b.runs, name, "fanout", "ws"), figure)
            for name in (SINGLE, CLUSTER)
        }
        line = [metric]
        for name in (SINGLE, CLUSTER):
            cell = cells[name]
            text = fmt_value(cell.value)
            if cell.issue:
                notes.append(f"{metric} / {name}: {cell.issue}")
                text += f" [{len(notes)}]"
            line.append(text)
        one, two = cells[SINGLE].value, cells[CLUSTER].value
        ratio = two / one if one and two is not None else None
        line.append("—" if ratio is None else f"{ratio:.2f}x")
        if target == "deliveries":
            met = None if ratio is None else ratio >= DELIVERIES_TARGET
            line.append(f">= {DELIVERIES_TARGET}x: {verdict(met)}")
            complete &= met is not None
        elif target == "p99":
            added = None if one is None or two is None else two - one
            where = "" if added is None else f" (adds {added:+.2f} ms)"
            met = None if added is None else added <= P99_BUDGET_MS
            line.append(f"broker adds <= {P99_BUDGET_MS:.0f} ms: {verdict(met)}{where}")
            complete &= met is not None
        else:
            line.append("")
        body.append(line)
    lines = [
        f"fan-out: {p.fanout_subs:,} subscribers of /broadcast x {p.fanout_messages} messages of "
        f"{p.fanout_size} B, 1 publisher, one message in flight; "
        f"{len(select(b.runs, SINGLE, 'fanout', 'ws'))} round(s), interleaved",
        "",
        *markdown([header, *body]),
    ]
    lines += [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    lines += cluster_notes(b)
    if p.fanout_subs != 1000:
        lines.append(
            f"note: the targets are stated for 1,000 subscribers; this run had "
            f"{p.fanout_subs:,}, so the verdicts say nothing about them"
        )
    return lines, complete


def cluster_notes(b: Bench) -> list[str]:
    runs = select(b.runs, CLUSTER, "fanout", "ws")
    notes = [
        f"note: single = one gateway, no broker; cluster = {' + '.join(NODES)} (bench/config.toml "
        "+ [broker]) and one local redis-server; cluster CPU = both gateways + redis-server, "
        "over the loadgen's measured window"
    ]
    if runs and runs[-1].get("split"):
        split = ", ".join(f"{n} connections to {h}" for h, n in runs[-1]["split"].items())
        notes.append(
            f"note: the last cluster run's connections (subscribers and publisher): {split}"
        )
    shares: dict[str, list[float]] = {}
    for run in runs:
        cpu = run.get("cpu_s_whole_run") or {}
        total = sum(cpu.values())
        for name, seconds in cpu.items():
            if total > 0:
                shares.setdefault(name, []).append(100 * seconds / total)
    if shares:
        parts = ", ".join(f"{n} {sorted(v)[(len(v) - 1) // 2]:.1f}%" for n, v in shares.items())
        notes.append(
            f"note: who used the cluster's CPU (whole loadgen run, connects included): {parts}"
        )
    return notes


def verdict(met: bool | None) -> str:
    return "—" if met is None else ("met" if met else "NOT met")


def markdown(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def fmt(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [fmt(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [
        fmt(r) for r in rows[1:]
    ]


# ---------------------------------------------------------------- --workers 2 vs 1


def handshake_rounds(
    generator: loadgen.LoadGen,
    config: Path,
    env: dict[str, str],
    logdir: Path,
    rounds: int,
    count: int,
    concurrency: int,
) -> dict[int, list[dict[str, Any]]]:
    """``bench/workers.py``'s runs: 1 and 2 workers in turn, each round on fresh servers."""
    results: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for _ in range(rounds):
        for n in (1, 2):
            spec = gateway_spec(f"gateway-workers-{n}", config, "--workers", str(n))
            with start_server(spec, env, workers.UNPINNED, logdir) as server:
                workers.wait_for_workers(server, n)
                results[n].append(workers.handshakes(generator, server, count, concurrency))
    return results


# ---------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subs", type=int, default=1000, help="fan-out subscribers")
    parser.add_argument("--messages", type=int, default=200, help="fan-out messages per run")
    parser.add_argument("--size", type=int, default=64, help="fan-out message bytes")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of each part")
    parser.add_argument("--count", type=int, default=3000, help="handshakes per workers run")
    parser.add_argument("--concurrency", type=int, default=50, help="handshakes in flight")
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts")
    loadgen.add_option(parser)
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=25.0,
        metavar="PCT",
        help="before each fan-out run, wait until other processes use less than this %% of a "
        "core (default: %(default)s)",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="how long to wait for that before one run (default: %(default)s; 0: never), at "
        "most 5 min in all",
    )
    args = parser.parse_args(argv)
    parts = [s for s in str(args.only).split(",") if s]
    for part in parts:
        if part not in PARTS:
            parser.error(f"unknown part {part!r} (known: {', '.join(PARTS)})")
    if min(args.subs, args.messages, args.rounds, args.count, args.concurrency) < 1:
        parser.error("--subs, --messages, --rounds, --count and --concurrency must be >= 1")

    interrupt_on_sigterm()
    check_python()
    require_redis()
    generator = loadgen.prepare(Path(args.loadgen))
    pin = pinning()
    logdir = RESULTS / "cluster"
    env = {**os.environ, "GATEWAY_SECRET": secrets.token_urlsafe(32), "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONSTARTUP", None)
    policy = policy_credentials(env, ROOT)
    params = dataclasses.replace(
        FULL, fanout_subs=args.subs, fanout_messages=args.messages, fanout_size=args.size
    )
    b = Bench(params, pin, env, policy, logdir, generator, args.quiet_below, args.max_wait, 300.0)
    source = source_fingerprint(ROOT)
    machine = describe_machine(machine_info(ROOT, generator))
    started_at = datetime.datetime.now(datetime.UTC)
    say(f"bench: cluster run on {machine}; logs in {logdir}")
    out: list[str] = []
    handshakes: dict[int, list[dict[str, Any]]] = {}
    complete = True
    interrupted = False
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp,
            RedisServer(Path(tmp) / "redis") as redis,
        ):
            config = cluster_config(Path(tmp), redis)
            if "fanout" in parts:
                say(f"bench: --- fan-out, single vs cluster; {pin.note}")
                with started(config, redis, env, pin, logdir) as (single, cluster):
                    fanout_rounds(b, single, cluster, args.rounds)
            if "workers" in parts:
                say("bench: --- --workers 2 vs 1 handshakes")
                handshakes = handshake_rounds(
                    generator, config, env, logdir, args.rounds, args.count, args.concurrency
                )
    except KeyboardInterrupt:
        interrupted = True
        out.append("note: interrupted: the tables hold the runs completed before Ctrl-C")
    except RuntimeError as exc:
        complete = False
        out.append(f"note: aborted: {exc}")
    minutes = (datetime.datetime.now(datetime.UTC) - started_at).total_seconds() / 60
    print(f"\ncluster run, {started_at:%Y-%m-%d %H:%M} UTC, {minutes:.1f} min; {machine}\n")
    if "fanout" in parts:
        lines, figures = fanout_table(b)
        complete &= figures
        print("\n".join([*lines, f"note: {pin.note}"]))
    if handshakes and all(handshakes.values()):
        namespace = argparse.Namespace(
            count=args.count, concurrency=args.concurrency, rounds=args.rounds
        )
        cpus = os.cpu_count()
        print(
            f"\n--workers 2 vs 1 (bench/workers.py's runs; this machine has {cpus} CPUs, so "
            "it cannot show what a second worker is worth on a bigger one):\n"
        )
        print(workers.table(handshakes, namespace))
    if source_fingerprint(ROOT) != source:
        out.append(
            "WARNING: the gateway's source (gateway/, plugins/) changed during the run; rerun on "
            "a tree nobody is editing"
        )
    for line in out:
        print(line)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cluster.json").write_text(
        json.dumps({"machine": machine, "runs": b.runs, "handshakes": handshakes}, indent=1) + "\n"
    )
    say(f"bench: every run in {RESULTS / 'cluster.json'}")
    if interrupted:
        return 130
    return 0 if complete and not any(r.get("issue") for r in b.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
