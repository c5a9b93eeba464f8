"""The runs: one loadgen run against a running server (its JSON line and what we know about
it), the five scenarios on fresh servers taking turns, and why a run cannot be trusted."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .common import CONFIG, GATEWAY, GATEWAY_BASE, ROOT, SHIM, say, tail
from .loadgen import LoadGen
from .machine import Pinning, machine_busy, raise_nofile, source_fingerprint
from .params import Params
from .servers import RunningServer, server_specs, start_server


@dataclasses.dataclass
class Bench:
    params: Params
    pin: Pinning
    server_env: dict[str, str]
    policy_env: dict[str, str]  # Cookie + Origin for the shim
    logdir: Path
    generator: LoadGen  # the load generator, prepared (loadgen.prepare)
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
            str(self.generator.script),
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
                cwd=self.generator.dir,
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
        specs = server_specs(self.generator.dir, self.tree, self.base_tree, self.base_config)
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
