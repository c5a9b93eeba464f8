"""The gateway's benchmark: one command, every figure next to baselines from the same run.

    python bench/run.py            # the full run (~10-15 min)
    python bench/run.py --quick    # a smoke run (~1-2 min): shorter runs, one of each
    python bench/run.py --profile echo   # py-spy profile of the gateway under the echo load

Three servers, each its own process pinned to one core (``taskset -c 0``), are driven by the
shared Node load generator (``loadgen.js``, the npm ``ws`` client) pinned to another core:

- the gateway, ``python -m gateway serve --config bench/config.toml`` (``/echo`` and
  ``/broadcast`` with the full policy path: Origin allowlist and a signed session cookie;
  ``/echo-open`` with none);
- a bare trio-websocket server, the ``websockets`` asyncio server and Node's ``ws`` server
  (``bench/baselines/``);
- with ``--base-tree DIR``, a second gateway from another tree (``gateway-base``), run in turn
  with the first, for before/after figures from the same run.

The load generator's ``ws`` client sends no cookie: ``bench/ws_headers_shim.js`` is preloaded
(``node -r``) to add ``Cookie`` and ``Origin`` from the environment.  The loadgen's ``--raw``
client writes its own minimal handshake: the shim adds the same headers to it when asked
(``BENCH_RAW_HEADERS=1``, the ``raw-policy`` handshake runs on the gateway's ``/echo``); the
other raw runs use the gateway's ``/echo-open``.

With ``node-ws`` among the servers, a second table compares the gateway with Node ``ws`` and
``websockets`` on the five figures of issue 13, each against its target.

Results: a table on stdout, and ``bench/results/latest.{json,md}`` (raw loadgen JSON included).
See docs/performance.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CONFIG = BENCH / "config.toml"
CACHE = BENCH / ".loadgen"
RESULTS = BENCH / "results"
SHIM = BENCH / "ws_headers_shim.js"
DEFAULT_LOADGEN_SRC = ROOT.parent / "shared" / "bench"
LOADGEN_FILES = ("loadgen.js", "package.json", "package-lock.json", "README.md")

HOST = "127.0.0.1"
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
START_TIMEOUT = 30.0  # seconds for a server to log its port
STOP_GRACE = 15.0  # SIGTERM -> this long -> SIGKILL (the gateway drains for up to 10 s)
FD_MARGIN = 1024  # descriptors beyond the idle connections (listeners, logs, Node itself)

GATEWAY = "gateway"
GATEWAY_BASE = "gateway-base"  # --base-tree: the gateway from another tree, for A/B runs
TRIO_WS = "trio-websocket"
WEBSOCKETS = "websockets"
NODE_WS = "node-ws"
SERVER_NAMES = (GATEWAY, GATEWAY_BASE, TRIO_WS, WEBSOCKETS, NODE_WS)
DEFAULT_SERVERS = (GATEWAY, TRIO_WS, WEBSOCKETS, NODE_WS)
GATEWAYS = (GATEWAY, GATEWAY_BASE)
SCENARIOS = ("echo", "fanout", "handshake", "large", "idle")


# ---------------------------------------------------------------- parameters


@dataclasses.dataclass(frozen=True)
class Params:
    echo_runs: int
    echo_duration: float
    echo_clients: tuple[str, ...]  # "raw" (bare-socket client), "ws" (npm ws + policy)
    fanout_messages: int
    handshake_count: int
    handshake_runs: int
    large_messages: int
    large_runs: int
    idle_counts: tuple[int, ...]
    echo_conns: int = 50
    echo_window: int = 10
    echo_size: int = 64
    echo_warmup: float = 1.0
    fanout_subs: int = 1000
    fanout_size: int = 64
    handshake_concurrency: int = 20
    large_size: int = 1024 * 1024


FULL = Params(
    echo_runs=3,
    echo_duration=10.0,
    echo_clients=("raw", "ws"),
    fanout_messages=200,
    handshake_count=2000,
    handshake_runs=3,
    large_messages=200,
    large_runs=3,
    idle_counts=(5000, 10000),
)
QUICK = Params(
    echo_runs=1,
    echo_duration=3.0,
    echo_clients=("raw",),
    fanout_messages=50,
    handshake_count=1000,
    handshake_runs=1,
    large_messages=50,
    large_runs=1,
    idle_counts=(1000, 2000),
)


# ---------------------------------------------------------------- small helpers


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


# ---------------------------------------------------------------- descriptors and cores


def nofile_hard() -> float:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return float("inf") if hard == resource.RLIM_INFINITY else float(hard)


def raise_nofile() -> None:
    """preexec_fn: the soft RLIMIT_NOFILE up to the hard limit (capped at 1 Mi)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@dataclasses.dataclass(frozen=True)
class Pinning:
    server: tuple[str, ...]
    loadgen: tuple[str, ...]
    note: str


def pinning() -> Pinning:
    cpus = sorted(os.sched_getaffinity(0))
    taskset = shutil.which("taskset")
    if taskset is None:
        return Pinning((), (), "taskset not found: server and load generator are not pinned")
    if len(cpus) < 2:
        return Pinning((), (), f"only CPU {cpus} available: nothing pinned")
    return Pinning(
        (taskset, "-c", str(cpus[0])),
        (taskset, "-c", str(cpus[1])),
        f"servers pinned to CPU {cpus[0]}, load generator to CPU {cpus[1]} (taskset)",
    )


# ---------------------------------------------------------------- the load generator


def prepare_loadgen(source: Path) -> None:
    """Copy the shared loadgen into bench/.loadgen and ``npm install`` it when needed."""
    if (source / "loadgen.js").is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        for name in LOADGEN_FILES:
            src = source / name
            if src.is_file() and (
                not (CACHE / name).is_file() or (CACHE / name).read_bytes() != src.read_bytes()
            ):
                shutil.copyfile(src, CACHE / name)
    elif (CACHE / "loadgen.js").is_file():
        say(f"bench: {source} has no loadgen.js; using the cached copy in {CACHE}")
    else:
        raise fail(
            f"no load generator: {source}/loadgen.js does not exist and nothing is cached in "
            f"{CACHE}; pass --loadgen DIR (the shared bench folder with loadgen.js and "
            "package.json) or set BENCH_LOADGEN"
        )
    if shutil.which("node") is None:
        raise fail("node (Node.js >= 18) is not on PATH; the load generator is a Node script")
    stamp = CACHE / "node_modules" / ".bench-package.json"
    package = (CACHE / "package.json").read_bytes()
    if not stamp.is_file() or stamp.read_bytes() != package:
        npm = shutil.which("npm")
        if npm is None:
            raise fail("npm is not on PATH: cannot install the load generator's `ws` package")
        say(f"bench: npm install in {CACHE} (once)")
        try:
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund"],
                cwd=CACHE,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise fail(f"npm install in {CACHE} took more than 10 minutes; gave up") from None
        if done.returncode != 0:
            raise fail(
                f"npm install failed in {CACHE} (exit {done.returncode}); the load generator "
                f"needs the npm packages in {CACHE / 'package.json'}:\n"
                + "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
            )
        stamp.write_bytes(package)
    run_checked(["node", "-e", "require('ws')"], cwd=CACHE, timeout=30)


# ---------------------------------------------------------------- servers


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
    tree: Path = ROOT, base_tree: Path | None = None, base_config: Path = CONFIG
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
            CACHE,  # where `ws` is installed (prepare_loadgen)
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


# ---------------------------------------------------------------- runs


def source_fingerprint(tree: Path) -> str:
    """A hash of the gateway's source as it is now: others may edit the tree during a run."""
    digest = hashlib.sha256()
    for folder in ("gateway", "plugins"):
        for path in sorted((tree / folder).rglob("*.py")):
            digest.update(str(path.relative_to(tree)).encode())
            with contextlib.suppress(OSError):
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def machine_busy(interval: float = 1.0) -> float | None:
    """CPU busy on the whole machine over ``interval`` seconds, in % of one core."""

    def sample() -> tuple[float, float] | None:
        try:
            with open("/proc/stat") as stat:
                values = [float(x) for x in stat.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal
        busy = values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
        return busy, busy + values[3] + values[4]

    first = sample()
    time.sleep(interval)
    second = sample()
    if first is None or second is None or second[1] <= first[1]:
        return None
    return 100.0 * (os.cpu_count() or 1) * (second[0] - first[0]) / (second[1] - first[1])


@dataclasses.dataclass
class Bench:
    params: Params
    pin: Pinning
    server_env: dict[str, str]
    policy_env: dict[str, str]  # Cookie + Origin for the shim
    logdir: Path
    quiet_below: float = 25.0  # % of one core used by others before a run starts
    max_wait: float = 0.0  # seconds to wait for that before one run; 0: never wait
    wait_budget: float = 0.0  # seconds of such waiting in the whole benchmark
    waited: float = 0.0
    runs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    reuse: list[RunningServer] | None = None  # run on these instead of fresh servers
    sources: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # hash -> groups
    base_sources: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # gateway-base's
    tree: Path = ROOT  # where the gateway's code comes from
    base_tree: Path | None = None  # where gateway-base's comes from (--base-tree)
    base_config: Path = CONFIG  # gateway-base's config (--base-config)

    def wait_quiet(self) -> float | None:
        """Wait (bounded) until the rest of the machine is quiet; the busy % last seen.

        Between runs our servers are idle, so what is busy is someone else: a run started
        then would measure a server sharing its core."""
        if self.max_wait <= 0:
            return None
        start = time.monotonic()
        deadline = start + min(self.max_wait, max(0.0, self.wait_budget - self.waited))
        busy = machine_busy()
        told = False
        while busy is not None and busy > self.quiet_below and time.monotonic() < deadline:
            if not told:
                say(f"bench: machine busy ({busy:.0f}% of a core): waiting up to "
                    f"{deadline - start:.0f} s for < {self.quiet_below:.0f}%")  # fmt: skip
                told = True
            busy = machine_busy()
        if told:
            self.waited += time.monotonic() - start
        return busy

    def loadgen(
        self,
        server: RunningServer,
        scenario: str,
        path: str,
        options: Sequence[str],
        *,
        variant: str,
        timeout: float,
        extra_env: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One loadgen run: its JSON line, plus what we know about it."""
        busy_before = self.wait_quiet()
        server.check_alive()
        label = f"{server.spec.name}:{variant}"
        argv = [
            *self.pin.loadgen,
            "node",
            "-r",
            str(SHIM),
            str(CACHE / "loadgen.js"),
            scenario,
            "--url",
            server.url(path),
            "--pid",
            str(server.pid),
            "--label",
            label,
            *options,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
        if server.spec.policy:
            env.update(self.policy_env)
            env.update(extra_env or {})
        record: dict[str, Any] = {
            "server": server.spec.name,
            "scenario": scenario,
            "variant": variant,
            "path": path,
            "argv": argv[len(self.pin.loadgen) :],
            "machine_busy_before_pct": None if busy_before is None else round(busy_before, 1),
        }
        try:
            done = subprocess.run(
                argv,
                cwd=CACHE,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                preexec_fn=raise_nofile,
                start_new_session=True,
                check=False,
            )
        except subprocess.TimeoutExpired:
            record["result"] = {"error": f"loadgen gave no result within {timeout:.0f} s"}
            say(f"[{label}] {scenario}: TIMEOUT after {timeout:.0f} s")
        else:
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            try:
                record["result"] = json.loads(lines[-1]) if lines else {}
            except json.JSONDecodeError:
                record["result"] = {}
            if not lines:
                record["result"] = {
                    "error": f"loadgen exit {done.returncode}, no JSON: "
                    + " | ".join(done.stderr.strip().splitlines()[-5:])
                }
            say(done.stderr.strip() or f"[{label}] {scenario}: exit {done.returncode}")
        if server.proc.poll() is not None:
            record["result"].setdefault("error", f"{server.spec.name} died during the run")
            say(f"bench: {server.spec.name} died; its log:\n{tail(server.log)}")
        record["issue"] = run_issue(scenario, record["result"], self.params)
        self.runs.append(record)
        return record

    # One group per scenario: fresh servers (RSS and caches untouched by earlier scenarios),
    # and the servers take turns within a group so that machine noise hits them alike.
    @contextlib.contextmanager
    def servers(self, names: Sequence[str], group: str) -> Iterator[list[RunningServer]]:
        if self.reuse is not None:  # profile mode: the server py-spy is attached to
            yield [s for s in self.reuse if s.spec.name in names]
            return
        specs = server_specs(self.tree, self.base_tree, self.base_config)
        if GATEWAY in names:
            self.sources.setdefault(source_fingerprint(self.tree), []).append(group)
        if GATEWAY_BASE in names and self.base_tree is not None:
            self.base_sources.setdefault(source_fingerprint(self.base_tree), []).append(group)
        with contextlib.ExitStack() as stack:
            running = [
                stack.enter_context(
                    start_server(specs[n], self.server_env, self.pin, self.logdir / group)
                )
                for n in names
            ]
            time.sleep(0.5)
            yield running

    def echo(self, names: Sequence[str]) -> None:
        p = self.params
        for client in p.echo_clients:
            with self.servers(names, f"echo-{client}") as running:
                for _ in range(p.echo_runs):
                    for server in running:
                        raw = client == "raw"
                        self.loadgen(
                            server,
                            "echo",
                            server.spec.echo_open if raw else server.spec.echo,
                            [
                                *(["--raw"] if raw else []),
                                "--conns",
                                str(p.echo_conns),
                                "--window",
                                str(p.echo_window),
                                "--size",
                                str(p.echo_size),
                                "--duration",
                                str(p.echo_duration),
                                "--warmup",
                                str(p.echo_warmup),
                            ],
                            variant=client,
                            timeout=p.echo_duration + p.echo_warmup + 60,
                        )

    def fanout(self, names: Sequence[str]) -> None:
        p = self.params
        with self.servers(names, "fanout") as running:
            for server in running:
                self.loadgen(
                    server,
                    "fanout",
                    server.spec.broadcast,
                    [
                        "--subs",
                        str(p.fanout_subs),
                        "--messages",
                        str(p.fanout_messages),
                        "--size",
                        str(p.fanout_size),
                        "--timeout",
                        "120",
                    ],
                    variant="ws",
                    timeout=240,
                )

    def handshake(self, names: Sequence[str]) -> None:
        p = self.params
        common = ["--count", str(p.handshake_count), "--concurrency", str(p.handshake_concurrency)]
        timeout = p.handshake_count / 50 + 60
        with self.servers(names, "handshake") as running:
            for _ in range(p.handshake_runs):
                for server in running:
                    self.loadgen(
                        server,
                        "handshake",
                        server.spec.echo_open,
                        [*common, "--raw"],
                        variant="raw",
                        timeout=timeout,
                    )
                    self.loadgen(
                        server,
                        "handshake",
                        server.spec.echo_open,
                        common,
                        variant="ws",
                        timeout=timeout,
                    )
                    if server.spec.policy:
                        self.loadgen(
                            server,
                            "handshake",
                            server.spec.echo,
                            common,
                            variant="ws-policy",
                            timeout=timeout,
                        )
                        # The raw client with Cookie + Origin (the shim adds them): the
                        # policy path at the raw client's low cost.
                        self.loadgen(
                            server,
                            "handshake",
                            server.spec.echo,
                            [*common, "--raw"],
                            variant="raw-policy",
                            timeout=timeout,
                            extra_env={"BENCH_RAW_HEADERS": "1"},
                        )

    def large(self, names: Sequence[str]) -> None:
        p = self.params
        with self.servers(names, "large") as running:
            for _ in range(p.large_runs):
                for server in running:
                    self.loadgen(
                        server,
                        "large",
                        server.spec.echo,
                        [
                            "--size",
                            str(p.large_size),
                            "--messages",
                            str(p.large_messages),
                            "--timeout",
                            "120",
                        ],
                        variant="ws",
                        timeout=240,
                    )

    def idle(self, names: Sequence[str], counts: Sequence[int]) -> None:
        if not counts:
            return
        # One server at a time: each starts fresh, and only one holds 10k sockets.
        for name in names:
            with self.servers([name], f"idle-{name}") as (server,):
                self.loadgen(
                    server,
                    "idle",
                    server.spec.echo,
                    ["--counts", ",".join(map(str, counts)), "--timeout", "120"],
                    variant="ws",
                    timeout=120 + max(counts) / 20,
                )


def run_issue(scenario: str, r: dict[str, Any], p: Params) -> str | None:
    """Why a run's figure cannot be trusted, or None."""
    if r.get("error"):
        return str(r["error"])
    if r.get("timed_out"):
        return "timed out"
    if scenario in ("echo", "large", "handshake") and r.get("errors"):
        return f"{r['errors']} errors" + (f" ({r['first_error']})" if r.get("first_error") else "")
    if scenario == "fanout" and r.get("msgs_completed") != p.fanout_messages:
        return f"{r.get('msgs_completed')}/{p.fanout_messages} messages reached every subscriber"
    if scenario == "idle":
        counts = r.get("params", {}).get("counts") or []
        if counts and r.get("alive_at_end") != max(counts):
            return f"only {r.get('alive_at_end')}/{max(counts)} connections alive at the end"
    return None


# ---------------------------------------------------------------- the table


@dataclasses.dataclass
class Cell:
    value: float | None
    loadgen_cpu: float | None = None
    issue: str | None = None
    runs: int = 0


@dataclasses.dataclass
class Row:
    scenario: str
    metric: str
    cells: dict[str, Cell]
    target: str = ""
    ratio_only: bool = False  # a dimensionless gateway-only figure


Figure = Callable[[dict[str, Any]], float | None]
CPU_S = "{} / server CPU-s"


def per_cpu(key: str) -> Figure:
    """``key`` per second of server CPU: throughput / (server CPU % / 100)."""

    def figure(r: dict[str, Any]) -> float | None:
        value, cpu = r.get(key), r.get("server_cpu_pct")
        if not isinstance(value, int | float) or not isinstance(cpu, int | float) or cpu <= 0:
            return None
        return float(value) / (float(cpu) / 100.0)

    return figure


def field(key: str) -> Figure:
    def figure(r: dict[str, Any]) -> float | None:
        value = r.get(key)
        return float(value) if isinstance(value, int | float) else None

    return figure


def median_cell(runs: Sequence[dict[str, Any]], figure: Figure) -> Cell:
    """The median run by ``figure`` (the lower median for an even count)."""
    if not runs:
        return Cell(None)
    valued = [(figure(r["result"]), r) for r in runs]
    good = sorted(((v, r) for v, r in valued if v is not None), key=lambda vr: vr[0])
    issues = sorted({str(r["issue"]) for r in runs if r.get("issue")})
    if not good:
        return Cell(None, issue="; ".join(issues) or "no figure", runs=len(runs))
    value, run = good[(len(good) - 1) // 2]
    return Cell(
        value,
        run["result"].get("client_cpu_pct"),
        "; ".join(issues) or None,
        runs=len(runs),
    )


def select(
    runs: Sequence[dict[str, Any]], server: str, scenario: str, variant: str
) -> list[dict[str, Any]]:
    return [
        r
        for r in runs
        if r["server"] == server and r["scenario"] == scenario and r["variant"] == variant
    ]


def build_rows(runs: Sequence[dict[str, Any]], p: Params, idle_counts: Sequence[int]) -> list[Row]:
    echo = f"echo {p.echo_size} B x {p.echo_conns} conns x window {p.echo_window}"
    fan = f"fanout {p.fanout_subs} subs x {p.fanout_messages} msgs"
    hs = f"handshake {p.handshake_count} x concurrency {p.handshake_concurrency}"
    large = f"large {p.large_size // 1024} KiB binary echo x {p.large_messages}"
    all_ = SERVER_NAMES
    # (scenario label, metric, loadgen scenario, variant, figure, target, servers)
    specs: list[tuple[str, str, str, str, Figure, str, Sequence[str]]] = [
        (
            f"{echo}, raw client",
            CPU_S.format("msgs"),
            "echo",
            "raw",
            per_cpu("msgs_per_s"),
            "gw/trio-ws >= 2.5",
            all_,
        ),
        (f"{echo}, raw client", "msgs/s", "echo", "raw", field("msgs_per_s"), "", all_),
        (
            f"{echo}, ws client (gw: policy)",
            CPU_S.format("msgs"),
            "echo",
            "ws",
            per_cpu("msgs_per_s"),
            "gw/trio-ws >= 2.5",
            all_,
        ),
        (f"{echo}, ws client (gw: policy)", "msgs/s", "echo", "ws", field("msgs_per_s"), "", all_),
        (
            fan,
            CPU_S.format("deliveries"),
            "fanout",
            "ws",
            per_cpu("deliveries_per_s"),
            ">= 60,000",
            all_,
        ),
        (fan, "deliveries/s", "fanout", "ws", field("deliveries_per_s"), "", all_),
    ]
    for variant, what, servers in (
        ("raw", "raw client, no policy", all_),
        ("raw-policy", "raw client, policy", GATEWAYS),
        ("ws", "ws client, no policy", all_),
        ("ws-policy", "ws client, policy", GATEWAYS),
    ):
        specs += [
            (
                f"{hs}, {what}",
                "handshakes/s",
                "handshake",
                variant,
                field("handshakes_per_s"),
                ">= 1000",
                servers,
            ),
            (
                f"{hs}, {what}",
                CPU_S.format("handshakes"),
                "handshake",
                variant,
                per_cpu("handshakes_per_s"),
                "",
                servers,
            ),
        ]
    rows: list[Row] = []
    for scenario, metric, kind, variant, figure, target, names in specs:
        cells = {s: median_cell(select(runs, s, kind, variant), figure) for s in names}
        if any(c.runs for c in cells.values()):
            rows.append(Row(scenario, metric, cells, target))
    for metric, figure in (
        ("policy / no policy, handshakes/s", field("handshakes_per_s")),
        ("policy / no policy, per server CPU-s", per_cpu("handshakes_per_s")),
    ):
        policy = median_cell(select(runs, GATEWAY, "handshake", "ws-policy"), figure)
        open_ = median_cell(select(runs, GATEWAY, "handshake", "ws"), figure)
        if policy.value is not None and open_.value:
            issue = "; ".join(i for i in (policy.issue, open_.issue) if i) or None
            cell = Cell(policy.value / open_.value, policy.loadgen_cpu, issue, policy.runs)
            target = ">= 0.90" if metric.endswith("handshakes/s") else ""
            rows.append(Row(f"{hs}, ws client (gateway)", metric, {GATEWAY: cell}, target, True))
    for metric, figure, target in (
        ("MB/s", field("mb_per_s"), ">= 150"),
        (CPU_S.format("MB"), per_cpu("mb_per_s"), ""),
    ):
        cells = {s: median_cell(select(runs, s, "large", "ws"), figure) for s in all_}
        if any(c.runs for c in cells.values()):
            rows.append(Row(large, metric, cells, target))
    for n in idle_counts:
        figure = field(f"kib_per_conn_{n}")
        cells = {s: median_cell(select(runs, s, "idle", "ws"), figure) for s in all_}
        if any(c.runs for c in cells.values()):
            target = "<= 10" if n == 10000 else ""
            rows.append(
                Row(f"idle {n:,} connections", "KiB / connection (lower: better)", cells, target)
            )
    return rows


@dataclasses.dataclass(frozen=True)
class Goal:
    """A target of issue 13: the gateway's figure against a baseline's (``at_least`` times
    it) or against a fixed bound (``at_most``)."""

    text: str
    baseline: str | None = None
    at_least: float = 1.0
    at_most: float | None = None

    def verdict(self, cells: dict[str, Cell], name: str = GATEWAY) -> str:
        gw = cells.get(name)
        if gw is None or gw.value is None:
            return "—"
        if self.at_most is not None:
            return ("met" if gw.value <= self.at_most else "missed") + f" ({gw.value:.2f})"
        base = cells.get(self.baseline or "")
        if base is None or not base.value:
            return "—"
        ratio = gw.value / base.value
        return ("met" if ratio >= self.at_least else "missed") + f" ({ratio:.2f}x)"


def compare_table(
    runs: Sequence[dict[str, Any]], p: Params, idle_counts: Sequence[int], names: Sequence[str]
) -> str:
    """Issue 13's table: per server CPU-second (idle: KiB per connection), the gateway beside
    Node ``ws`` and ``websockets``, each figure against its target.  The gateway's handshakes
    are the raw client's on ``/echo`` with Origin + cookie (``raw-policy``); the baselines
    have no policy to check."""
    gateways = [n for n in GATEWAYS if n in names]
    shown = [n for n in (NODE_WS, WEBSOCKETS) if n in names] + gateways
    idle_n = max(idle_counts) if idle_counts else None
    # (label, loadgen scenario, variant for baselines, variant for gateways, figure, goal)
    specs: list[tuple[str, str, str, str, Figure, Goal]] = [
        (
            f"{p.large_size // 1024} KiB binary echo, MB",
            "large",
            "ws",
            "ws",
            per_cpu("mb_per_s"),
            Goal(">= 1.0x websockets", WEBSOCKETS),
        ),
        (
            f"handshakes (raw client, {p.handshake_concurrency} at a time)",
            "handshake",
            "raw",
            "raw-policy",
            per_cpu("handshakes_per_s"),
            Goal(">= 1.0x websockets, gateway with Origin + cookie auth on", WEBSOCKETS),
        ),
    ]
    if idle_n is not None:
        specs.append(
            (
                f"idle KiB per connection at {idle_n:,}",
                "idle",
                "ws",
                "ws",
                field(f"kib_per_conn_{idle_n}"),
                Goal("<= 6.5", at_most=6.5),
            )
        )
    specs += [
        (
            f"echo {p.echo_size} B, msgs (raw client)",
            "echo",
            "raw",
            "raw",
            per_cpu("msgs_per_s"),
            Goal(">= 1.0x Node ws", NODE_WS),
        ),
        (
            f"fan-out to {p.fanout_subs:,}, deliveries",
            "fanout",
            "ws",
            "ws",
            per_cpu("deliveries_per_s"),
            Goal(">= 1.0x Node ws", NODE_WS),
        ),
    ]
    header = ["per server CPU-second", *shown, "target"]
    header += [f"{n}: verdict" if len(gateways) > 1 else "verdict" for n in gateways]
    body: list[list[str]] = []
    for label, kind, variant, gw_variant, figure, goal in specs:
        cells = {
            n: median_cell(select(runs, n, kind, gw_variant if n in GATEWAYS else variant), figure)
            for n in shown
        }
        if not any(c.runs for c in cells.values()):
            continue
        line = [label]
        for n in shown:
            cell = cells[n]
            line.append(fmt_value(cell.value) + (" (!)" if cell.issue else ""))
        line.append(goal.text)
        line += [goal.verdict(cells, n) for n in gateways]
        body.append(line)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    lines = [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt(r) for r in body]
    if any("(!)" in cell for line in body for cell in line):
        lines.append("(!): a run behind this median had an issue; see the footnotes above")
    return "\n".join(lines)


def fmt_value(v: float | None, ratio: bool = False) -> str:
    if v is None:
        return "—"
    if ratio:
        return f"{v:.2f}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


RATIO_HEADS = {
    GATEWAY_BASE: "gw / gw-base",
    TRIO_WS: "gw / trio-ws",
    WEBSOCKETS: "gw / websockets",
    NODE_WS: "gw / node-ws",
}


def render_table(
    rows: Sequence[Row], names: Sequence[str] = DEFAULT_SERVERS
) -> tuple[str, list[str]]:
    """The markdown table and its footnotes (one per figure that has an issue); a column
    (and a ratio to the gateway) for each server in ``names``."""
    shown = [n for n in SERVER_NAMES if n in names or n == GATEWAY]
    others = [n for n in shown if n != GATEWAY]
    header = ["scenario", "metric"]
    for name in shown:
        header += [name, "lg CPU"]
    header += [RATIO_HEADS[n] for n in others] + ["target"]
    notes: list[str] = []
    body: list[list[str]] = []
    for row in rows:
        line = [row.scenario, row.metric]
        for name in shown:
            cell = row.cells.get(name)
            if cell is None or cell.runs == 0:
                line += ["—", ""]
                continue
            text = fmt_value(cell.value, row.ratio_only)
            if cell.issue:
                notes.append(f"{row.scenario} / {name}: {cell.issue}")
                text += f" [{len(notes)}]"
            cpu = cell.loadgen_cpu
            line += [text, "" if cpu is None else f"{cpu:.0f}%"]
        gw = row.cells.get(GATEWAY)
        for other in others:
            base = row.cells.get(other)
            if gw and base and gw.value is not None and base.value:
                line.append(f"{gw.value / base.value:.2f}x")
            else:
                line.append("—")
        line.append(row.target)
        body.append(line)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    lines = [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt(r) for r in body]
    return "\n".join(lines), notes


def render_runs(runs: Sequence[dict[str, Any]]) -> str:
    """Every run, one line: the figures the table is built from."""
    lines = [
        "| server | scenario | variant | figure | server CPU | loadgen CPU | other CPU | latency |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        r = run["result"]
        if r.get("error"):
            figure = f"error: {r['error']}"
        elif run["scenario"] == "echo":
            figure = f"{r.get('msgs_per_s')} msg/s"
        elif run["scenario"] == "fanout":
            figure = f"{r.get('deliveries_per_s')} deliveries/s"
        elif run["scenario"] == "handshake":
            figure = f"{r.get('handshakes_per_s')} handshakes/s"
        elif run["scenario"] == "large":
            figure = f"{r.get('mb_per_s')} MB/s"
        else:
            points = r.get("points") or []
            figure = ", ".join(f"N={q['N']}: {q['kib_per_conn']} KiB" for q in points)
        lat = ""
        if r.get("lat_p50_ms") is not None:
            lat = f"p50 {r['lat_p50_ms']} / p99 {r['lat_p99_ms']} ms"
        elif r.get("last_p50_ms") is not None:
            lat = f"last sub p50 {r['last_p50_ms']} / p99 {r['last_p99_ms']} ms"
        elif r.get("open_p50_ms") is not None:
            lat = f"open p50 {r['open_p50_ms']} / p99 {r['open_p99_ms']} ms"
        elif r.get("rtt_p50_ms") is not None:
            lat = f"rtt p50 {r['rtt_p50_ms']} / p99 {r['rtt_p99_ms']} ms"

        def pct(key: str, r: dict[str, Any] = r) -> str:
            v = r.get(key)
            return "" if v is None else f"{v}%"

        if run.get("issue") and not r.get("error"):
            figure += f" ({run['issue']})"
        lines.append(
            f"| {run['server']} | {run['scenario']} | {run['variant']} | {figure} | "
            f"{pct('server_cpu_pct')} | {pct('client_cpu_pct')} | {pct('other_cpu_pct')} | {lat} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- the machine


def machine_info(tree: Path) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str] = {}
    for dist in ("trio", "trio-websocket", "websockets", "wsproto", "h11"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    with contextlib.suppress(OSError, ValueError, KeyError):
        ws_pkg = json.loads((CACHE / "node_modules" / "ws" / "package.json").read_text())
        versions["ws (node)"] = str(ws_pkg["version"])
    node = ""
    with contextlib.suppress(SystemExit):
        node = run_checked(["node", "--version"], timeout=10).strip()
    commit = ""
    with contextlib.suppress(SystemExit):
        if tree == ROOT:
            commit = run_checked(
                ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], timeout=10
            )
    changed = ""
    with contextlib.suppress(SystemExit):
        if tree != ROOT:
            raise SystemExit  # another tree: no git state to report
        changed = run_checked(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "gateway", "plugins"],
            timeout=10,
        )
    return {
        "nproc": os.cpu_count(),
        "cpus_allowed": sorted(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "node": node,
        "kernel": platform.release(),
        "versions": versions,
        "commit": commit.strip(),
        "gateway_tree": str(tree),
        "uncommitted": [line[3:] for line in changed.splitlines() if line[3:]],
        "nofile_hard": None if nofile_hard() == float("inf") else int(nofile_hard()),
    }


def describe_machine(m: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return (
        f"{m['nproc']} CPUs ({m['cpu_model']}), Linux {m['kernel']}, "
        f"{m['implementation']} {m['python']}, node {m['node']}; {versions}; "
        + (
            f"commit {m['commit'] or '?'}"
            if m["gateway_tree"] == str(ROOT)
            else f"gateway from {m['gateway_tree']}"
        )
        + (f" + uncommitted changes to {len(m['uncommitted'])} files" if m["uncommitted"] else "")
    )


# ---------------------------------------------------------------- set-up


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


def idle_counts_for(wanted: Sequence[int], notes: list[str]) -> list[int]:
    hard = nofile_hard()
    counts = [n for n in wanted if n + FD_MARGIN <= hard]
    for n in wanted:
        if n not in counts:
            notes.append(
                f"idle {n:,} skipped: the hard RLIMIT_NOFILE is {hard:.0f}, and the server and "
                f"the load generator each need about {n + FD_MARGIN:,} descriptors (raise it "
                "with `ulimit -Hn` as root, or in /etc/security/limits.conf)"
            )
    return counts


def interrupt_on_sigterm() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


# ---------------------------------------------------------------- profile mode


def profile(
    kind: str,
    duration: float,
    pin: Pinning,
    env: dict[str, str],
    policy: dict[str, str],
    logdir: Path,
    tree: Path = ROOT,
) -> None:
    """Run the gateway under one scenario's load with py-spy attached; print the top frames."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise fail("py-spy is not installed: pip install py-spy (into the venv)")
    params = dataclasses.replace(
        FULL, echo_runs=1, echo_duration=duration, echo_clients=("raw",), handshake_runs=2
    )
    bench = Bench(params, pin, env, policy, logdir, tree=tree)
    raw = RESULTS / f"profile-{kind}.collapsed"
    spy_log = logdir / "py-spy.log"
    logdir.mkdir(parents=True, exist_ok=True)
    with bench.servers([GATEWAY], f"profile-{kind}") as (server,), spy_log.open("wb") as log:
        spy_proc = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(server.pid),
                "--format",
                "raw",
                "--nolineno",
                "--rate",
                "200",
                "--output",
                str(raw),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        try:
            bench.reuse = [server]
            time.sleep(1.0)
            if spy_proc.poll() is not None:
                raise fail(f"py-spy could not attach:\n{tail(spy_log)}")
            getattr(bench, kind)([GATEWAY])
        finally:
            with contextlib.suppress(ProcessLookupError):
                spy_proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                spy_proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy_proc.kill()
                spy_proc.wait(timeout=5)
    if not raw.is_file():
        raise fail(f"py-spy wrote no profile:\n{tail(spy_log)}")
    text = summarise_profile(raw.read_text())
    out = RESULTS / f"profile-{kind}.txt"
    out.write_text(text)
    print(text)
    say(f"bench: wrote {out} (and the collapsed stacks, {raw.name}: load it in speedscope)")


def short_frame(frame: str) -> str:
    """``func (/long/path/site-packages/pkg/mod.py)`` -> ``func (pkg/mod.py)``."""
    match = re.fullmatch(r"(.*) \((.*)\)", frame)
    if not match:
        return frame
    func, path = match.groups()
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    with contextlib.suppress(ValueError):
        path = str(Path(path).relative_to(ROOT))
    return f"{func} ({path})"


def summarise_profile(collapsed: str, top: int = 25) -> str:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [short_frame(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ")]  # py-spy's thread label
        if not frames:
            continue
        samples += n
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    if not samples:
        return "no samples\n"
    lines = [f"{samples} samples", "", f"top {top} by own time (the frame on top of the stack):"]
    lines += [f"{100 * n / samples:6.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", f"top {top} by total time (the frame anywhere on the stack):"]
    lines += [f"{100 * n / samples:6.1f}%  {f}" for f, n in total.most_common(top)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The gateway's benchmark against baselines.")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~1-2 min)")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios (default: all of {','.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma-separated servers of {','.join(SERVER_NAMES)} (default: %(default)s; "
        f"{GATEWAY_BASE} comes with --base-tree)",
    )
    parser.add_argument(
        "--loadgen",
        type=Path,
        default=Path(os.environ.get("BENCH_LOADGEN", DEFAULT_LOADGEN_SRC)),
        help="folder holding the shared loadgen.js and package.json (default: %(default)s)",
    )
    parser.add_argument(
        "--gateway-tree",
        type=Path,
        default=ROOT,
        metavar="DIR",
        help="run the gateway from this folder (holding gateway/ and plugins/), e.g. an older "
        "commit exported with `git archive COMMIT gateway plugins | tar -x -C DIR` "
        "(default: this repository)",
    )
    parser.add_argument(
        "--base-tree",
        type=Path,
        metavar="DIR",
        help=f"also run a second gateway ({GATEWAY_BASE}) from this folder (e.g. `git worktree "
        "add DIR COMMIT`), in turn with the first in every scenario: before/after figures "
        "from the same run",
    )
    parser.add_argument(
        "--base-config",
        type=Path,
        default=CONFIG,
        metavar="FILE",
        help=f"{GATEWAY_BASE}'s config (default: bench/config.toml): with --base-tree . it "
        "measures what a setting costs, e.g. the same config with an [admin] table",
    )
    parser.add_argument(
        "--profile",
        choices=("echo", "fanout", "handshake", "large"),
        help="instead of the table: profile the gateway under this load with py-spy",
    )
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=25.0,
        metavar="PCT",
        help="before each run, wait until other processes use less than this %% of a core "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        metavar="SECONDS",
        help="how long to wait for that before one run (default: 20, 3 with --quick; 0: never), "
        "at most 5 min in all (30 s with --quick)",
    )
    parser.add_argument(
        "--profile-seconds", type=float, default=15.0, help="echo duration when profiling"
    )
    args = parser.parse_args(argv)
    only = [s for s in str(args.only).split(",") if s]
    names = [s for s in str(args.servers).split(",") if s]
    for s in only:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s!r} (known: {', '.join(SCENARIOS)})")
    for s in names:
        if s not in SERVER_NAMES:
            parser.error(f"unknown server {s!r} (known: {', '.join(SERVER_NAMES)})")

    tree = Path(args.gateway_tree).resolve()
    if not (tree / "gateway" / "__main__.py").is_file():
        parser.error(f"--gateway-tree {tree}: no gateway/__main__.py there")
    base_tree = None if args.base_tree is None else Path(args.base_tree).resolve()
    if base_tree is not None:
        if not (base_tree / "gateway" / "__main__.py").is_file():
            parser.error(f"--base-tree {base_tree}: no gateway/__main__.py there")
        if GATEWAY_BASE not in names:
            names.insert(names.index(GATEWAY) + 1 if GATEWAY in names else 0, GATEWAY_BASE)
    elif GATEWAY_BASE in names:
        parser.error(f"{GATEWAY_BASE} needs --base-tree DIR")
    interrupt_on_sigterm()
    check_python()
    prepare_loadgen(Path(args.loadgen))
    pin = pinning()
    RESULTS.mkdir(parents=True, exist_ok=True)
    logdir = RESULTS / "logs"
    server_env = {**os.environ, "GATEWAY_SECRET": secrets.token_urlsafe(32)}
    server_env.pop("PYTHONSTARTUP", None)
    policy = policy_credentials({**server_env, **dict(gateway_spec(GATEWAY, tree).env)}, tree)

    if args.profile:
        env = {**server_env, **dict(gateway_spec(GATEWAY, tree).env)}
        profile(args.profile, float(args.profile_seconds), pin, env, policy, logdir, tree)
        return 0

    params = QUICK if args.quick else FULL
    notes = [pin.note]
    idle_counts = idle_counts_for(params.idle_counts, notes) if "idle" in only else []
    max_wait = args.max_wait if args.max_wait is not None else (3.0 if args.quick else 20.0)
    budget = 30.0 if args.quick else 300.0
    bench = Bench(params, pin, server_env, policy, logdir, args.quiet_below, max_wait, budget)
    bench.tree = tree
    bench.base_tree = base_tree
    bench.base_config = Path(args.base_config).resolve()
    machine = machine_info(tree)
    started = datetime.datetime.now(datetime.UTC)
    say(f"bench: {'quick' if args.quick else 'full'} run on {describe_machine(machine)}")
    say(f"bench: {pin.note}; logs in {logdir}")
    interrupted = False
    try:
        for scenario in SCENARIOS:
            if scenario not in only:
                continue
            say(f"bench: --- {scenario}")
            if scenario == "idle":
                bench.idle(names, idle_counts)
            else:
                getattr(bench, scenario)(names)
    except KeyboardInterrupt:
        interrupted = True
        notes.append("interrupted: the table holds the runs completed before Ctrl-C")
        say("bench: interrupted; servers stopped")
    except RuntimeError as exc:
        notes.append(f"aborted: {exc}")
        say(f"bench: aborted: {exc}")
    finished = datetime.datetime.now(datetime.UTC)
    others = [
        float(r["result"]["other_cpu_pct"])
        for r in bench.runs
        if isinstance(r["result"].get("other_cpu_pct"), int | float)
    ]
    for which, sources in ((GATEWAY, bench.sources), (GATEWAY_BASE, bench.base_sources)):
        if len(sources) > 1:
            versions = "; ".join(f"{h}: {', '.join(g)}" for h, g in sources.items())
            notes.append(
                f"WARNING: the source of {which} (gateway/, plugins/) changed during the run, "
                f"so its figures mix {len(sources)} versions ({versions}); rerun on a tree "
                "nobody is editing"
            )
    if base_tree is not None:
        notes.append(f"{GATEWAY_BASE}: the gateway from {base_tree}")
    if bench.waited:
        notes.append(
            f"waited {bench.waited:.0f} s in all for the machine to be quiet (< "
            f"{bench.quiet_below:.0f}% of a core busy) before runs"
        )
    if others:
        notes.append(
            f"other processes on the machine used {max(0.0, sum(others) / len(others)):.0f}% "
            f"of a core on average during the runs (max {max(0.0, *others):.0f}%; the loadgen's "
            "estimate, which can dip below 0 by a few %): per server CPU-second "
            "figures hold up under such noise, per-second ones do not"
        )

    rows = build_rows(bench.runs, params, idle_counts)
    table, footnotes = render_table(rows, names)
    compare = compare_table(bench.runs, params, idle_counts, names) if NODE_WS in names else ""
    mode = "quick" if args.quick else "full"
    heading = (
        f"{mode} run, {started:%Y-%m-%d %H:%M} UTC, "
        f"{(finished - started).total_seconds() / 60:.1f} min; {describe_machine(machine)}"
    )
    print()
    print(heading)
    print()
    print(table)
    for i, note in enumerate(footnotes, 1):
        print(f"[{i}] {note}")
    for note in notes:
        print(f"note: {note}")
    if compare:
        print()
        print("issue 13: the gateway beside Node ws and websockets")
        print()
        print(compare)

    rows_json = [
        {
            **{k: v for k, v in dataclasses.asdict(r).items() if k != "cells"},
            "cells": {k: dataclasses.asdict(c) for k, c in r.cells.items()},
        }
        for r in rows
    ]
    (RESULTS / "latest.json").write_text(
        json.dumps(
            {
                "mode": mode,
                "started": started.isoformat(),
                "finished": finished.isoformat(),
                "machine": machine,
                "params": dataclasses.asdict(params),
                "idle_counts": idle_counts,
                "gateway_sources": bench.sources,
                "gateway_base_sources": bench.base_sources,
                "compare": compare,
                "notes": notes,
                "rows": rows_json,
                "runs": bench.runs,
            },
            indent=1,
        )
        + "\n"
    )
    md = [f"# Benchmark: {heading}", "", table, ""]
    md += [f"[{i}] {note}" for i, note in enumerate(footnotes, 1)]
    md += [f"- {note}" for note in notes]
    if compare:
        md += ["", "## Beside Node ws and websockets (issue 13)", "", compare]
    md += ["", "## Every run", "", render_runs(bench.runs), ""]
    (RESULTS / "latest.md").write_text("\n".join(md))
    say(f"bench: wrote {RESULTS / 'latest.md'} and {RESULTS / 'latest.json'}")
    if interrupted:
        return 130
    return 1 if any(r.get("issue") for r in bench.runs) else 0


if __name__ == "__main__":
    sys.exit(main())
