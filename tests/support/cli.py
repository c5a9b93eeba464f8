"""Run ``python -m gateway ...`` as a user would: a short-lived CLI run, its exit code and output
(tests/integration/test_cli.py, test_operate.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.gateway_config import REPO

CLI_TIMEOUT = 30.0  # seconds for one short-lived CLI run
EXIT_CONFIG = 2  # the exit code of a configuration error


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "GATEWAY_SECRET"}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=REPO,
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
