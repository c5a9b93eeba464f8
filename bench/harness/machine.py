"""The machine the benchmark runs on: cores and pinning, the descriptor limit, how busy it
is, what it is (CPU, versions, commit) and the source measured."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import os
import platform
import resource
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import ROOT, run_checked
from .loadgen import LoadGen

FD_MARGIN = 1024  # descriptors beyond the idle connections (listeners, logs, Node itself)


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


# ---------------------------------------------------------------- noise and change


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


# ---------------------------------------------------------------- what the machine is


def machine_info(tree: Path, loadgen: LoadGen) -> dict[str, Any]:
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
    ws_version = loadgen.ws_version()
    if ws_version is not None:
        versions["ws (node)"] = ws_version
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
