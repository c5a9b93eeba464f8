"""A figure from one run's loadgen JSON (per second, per server CPU-second), the median of
several runs, and a number as the tables print it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any


@dataclasses.dataclass
class Cell:
    value: float | None
    loadgen_cpu: float | None = None
    issue: str | None = None
    runs: int = 0


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
