"""The gateway's benchmark: one command, every figure next to baselines from the same run.

    python bench/run.py            # the full run (~10-15 min)
    python bench/run.py --quick    # a smoke run (~1-2 min): shorter runs, one of each
    python bench/run.py --profile echo   # py-spy profile of the gateway under the echo load

Three servers, each its own process pinned to one core (``taskset -c 0``), are driven by the
Node load generator (``bench/loadgen/loadgen.js``, the npm ``ws`` client) pinned to another
core:

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
See docs/performance.md for what each figure means, and ``bench/harness/`` for the code (this
file is its entry point).
"""

from __future__ import annotations

import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main())
