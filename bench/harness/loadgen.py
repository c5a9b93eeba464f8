"""The Node load generator in ``bench/loadgen/`` (``loadgen.js``, the npm ``ws`` client):
where it is, and its npm packages installed on first use."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from .common import BENCH, fail, run_checked, say

DEFAULT_DIR = BENCH / "loadgen"
STAMP = ".bench-stamp"  # in node_modules: the hash of the package files it was installed from
NPM_TIMEOUT = 600.0


@dataclasses.dataclass(frozen=True)
class LoadGen:
    """A folder holding ``loadgen.js`` and its ``package.json`` (and, once prepared, the
    ``node_modules`` it runs with: Node resolves ``ws`` from the script's folder)."""

    dir: Path

    @property
    def script(self) -> Path:
        return self.dir / "loadgen.js"

    def ws_version(self) -> str | None:
        try:
            package = json.loads((self.dir / "node_modules" / "ws" / "package.json").read_text())
            return str(package["version"])
        except (OSError, ValueError, KeyError):
            return None


def add_option(parser: argparse.ArgumentParser) -> None:
    """``--loadgen DIR`` (or ``BENCH_LOADGEN``): run another copy of the load generator."""
    parser.add_argument(
        "--loadgen",
        type=Path,
        default=Path(os.environ.get("BENCH_LOADGEN", DEFAULT_DIR)),
        metavar="DIR",
        help="folder holding loadgen.js and package.json; its npm packages are installed "
        "there on first use (default: %(default)s)",
    )


def package_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        path = folder / name
        digest.update(name.encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def prepare(folder: Path) -> LoadGen:
    """The load generator in ``folder``, its npm packages installed (again when its
    ``package.json`` or ``package-lock.json`` changed): ``npm ci`` from the lock file, or
    ``npm install`` for a copy without one."""
    folder = folder.resolve()
    loadgen = LoadGen(folder)
    if not loadgen.script.is_file() or not (folder / "package.json").is_file():
        raise fail(
            f"no load generator in {folder}: it needs loadgen.js and package.json "
            f"(bench/loadgen/ in this repository; --loadgen DIR or BENCH_LOADGEN for another)"
        )
    if shutil.which("node") is None:
        raise fail("node (Node.js >= 18) is not on PATH; the load generator is a Node script")
    stamp = folder / "node_modules" / STAMP
    wanted = package_hash(folder)
    if not stamp.is_file() or stamp.read_text().strip() != wanted:
        npm = shutil.which("npm")
        if npm is None:
            raise fail("npm is not on PATH: cannot install the load generator's `ws` package")
        command = "ci" if (folder / "package-lock.json").is_file() else "install"
        say(f"bench: npm {command} in {folder} (once)")
        try:
            done = subprocess.run(
                [npm, command, "--no-audit", "--no-fund"],
                cwd=folder,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise fail(f"npm {command} in {folder} took more than 10 minutes; gave up") from None
        if done.returncode != 0:
            raise fail(
                f"npm {command} failed in {folder} (exit {done.returncode}); the load generator "
                f"needs the npm packages in {folder / 'package.json'}:\n"
                + "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
            )
        stamp.write_text(wanted + "\n")
    run_checked(["node", "-e", "require('ws')"], cwd=folder, timeout=30)
    return loadgen
