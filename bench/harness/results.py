"""What a run prints and keeps: the heading, the tables and notes on stdout, and
``bench/results/latest.json`` (every loadgen JSON line) and ``latest.md`` (every run too)."""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Sequence
from typing import Any

from .common import NODE_WS, RESULTS, say
from .machine import describe_machine
from .report import build_rows, compare_table, render_runs, render_table
from .scenarios import Bench


def publish(
    bench: Bench,
    mode: str,
    started: datetime.datetime,
    finished: datetime.datetime,
    machine: dict[str, Any],
    idle_counts: Sequence[int],
    names: Sequence[str],
    notes: Sequence[str],
) -> None:
    params = bench.params
    rows = build_rows(bench.runs, params, idle_counts)
    table, footnotes = render_table(rows, names)
    compare = compare_table(bench.runs, params, idle_counts, names) if NODE_WS in names else ""
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
                "idle_counts": list(idle_counts),
                "gateway_sources": bench.sources,
                "gateway_base_sources": bench.base_sources,
                "compare": compare,
                "notes": list(notes),
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
