"""``bench/run.py``'s command line: its options, the run (scenario by scenario, on fresh
servers), and the notes on how far its figures can be trusted."""

from __future__ import annotations

import argparse
import datetime
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from . import loadgen, results
from .common import (
    CONFIG,
    DEFAULT_SERVERS,
    GATEWAY,
    GATEWAY_BASE,
    RESULTS,
    ROOT,
    SERVER_NAMES,
    check_python,
    interrupt_on_sigterm,
    say,
)
from .machine import describe_machine, idle_counts_for, machine_info, pinning
from .params import FULL, QUICK, SCENARIOS
from .profiling import profile
from .scenarios import Bench
from .servers import gateway_spec, policy_credentials


def build_parser() -> argparse.ArgumentParser:
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
    loadgen.add_option(parser)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
    generator = loadgen.prepare(Path(args.loadgen))
    pin = pinning()
    RESULTS.mkdir(parents=True, exist_ok=True)
    logdir = RESULTS / "logs"
    server_env = {**os.environ, "GATEWAY_SECRET": secrets.token_urlsafe(32)}
    server_env.pop("PYTHONSTARTUP", None)
    policy = policy_credentials({**server_env, **dict(gateway_spec(GATEWAY, tree).env)}, tree)

    if args.profile:
        env = {**server_env, **dict(gateway_spec(GATEWAY, tree).env)}
        profile(
            args.profile, float(args.profile_seconds), pin, env, policy, logdir, generator, tree
        )
        return 0

    params = QUICK if args.quick else FULL
    notes = [pin.note]
    idle_counts = idle_counts_for(params.idle_counts, notes) if "idle" in only else []
    max_wait = args.max_wait if args.max_wait is not None else (3.0 if args.quick else 20.0)
    budget = 30.0 if args.quick else 300.0
    bench = Bench(
        params, pin, server_env, policy, logdir, generator, args.quiet_below, max_wait, budget
    )
    bench.tree = tree
    bench.base_tree = base_tree
    bench.base_config = Path(args.base_config).resolve()
    machine = machine_info(tree, generator)
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
    notes += trust_notes(bench)
    results.publish(
        bench,
        "quick" if args.quick else "full",
        started,
        finished,
        machine,
        idle_counts,
        names,
        notes,
    )
    if interrupted:
        return 130
    return 1 if any(r.get("issue") for r in bench.runs) else 0


def trust_notes(bench: Bench) -> list[str]:
    """What the table's reader must know: the source changed under the run, a second tree,
    time spent waiting for a quiet machine, the other processes' CPU."""
    notes: list[str] = []
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
    if bench.base_tree is not None:
        notes.append(f"{GATEWAY_BASE}: the gateway from {bench.base_tree}")
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
    return notes
