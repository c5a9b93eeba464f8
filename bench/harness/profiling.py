"""Profile mode (``--profile``): py-spy attached to the gateway under one scenario's load,
and the top frames of what it sampled."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from .common import GATEWAY, RESULTS, ROOT, fail, say, tail
from .loadgen import LoadGen
from .machine import Pinning
from .params import FULL
from .scenarios import Bench


def profile(
    kind: str,
    duration: float,
    pin: Pinning,
    env: dict[str, str],
    policy: dict[str, str],
    logdir: Path,
    generator: LoadGen,
    tree: Path = ROOT,
) -> None:
    """Run the gateway under one scenario's load with py-spy attached; print the top frames."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise fail("py-spy is not installed: pip install py-spy (into the venv)")
    params = dataclasses.replace(
        FULL, echo_runs=1, echo_duration=duration, echo_clients=("raw",), handshake_runs=2
    )
    bench = Bench(params, pin, env, policy, logdir, generator, tree=tree)
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
