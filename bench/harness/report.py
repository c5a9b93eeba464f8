"""The tables: every figure beside every server (with ratios to the gateway), issue 13's
comparison with each target's verdict, and every run on one line."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from .common import (
    DEFAULT_SERVERS,
    GATEWAY,
    GATEWAY_BASE,
    GATEWAYS,
    NODE_WS,
    SERVER_NAMES,
    TRIO_WS,
    WEBSOCKETS,
)
from .figures import CPU_S, Cell, Figure, field, fmt_value, median_cell, per_cpu, select
from .params import Params


def aligned(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table's lines, each column padded to its widest cell."""
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [
        fmt(r) for r in body
    ]


@dataclasses.dataclass
class Row:
    scenario: str
    metric: str
    cells: dict[str, Cell]
    target: str = ""
    ratio_only: bool = False  # a dimensionless gateway-only figure


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
    lines = aligned(header, body)
    if any("(!)" in cell for line in body for cell in line):
        lines.append("(!): a run behind this median had an issue; see the footnotes above")
    return "\n".join(lines)


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
    return "\n".join(aligned(header, body)), notes


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
