"""The scenarios and their parameters: the full run and ``--quick``'s smoke run."""

from __future__ import annotations

import dataclasses

SCENARIOS = ("echo", "fanout", "handshake", "large", "idle")


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
