"""The import direction (docs/design.md, "Layout"): the pure bottom, ``gateway/config/`` and
``gateway/core/``, imports nothing of trio, ``ws/``, ``http/`` or ``proxy/``, directly or
through anything it imports."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE = ("config", "core")
# What runs: the event loop and the I/O shells (and the shells that import them).
FORBIDDEN = (
    "trio",
    "trio_websocket",
    "gateway.ws",
    "gateway.http",
    "gateway.proxy",
    "gateway.auth",
    "gateway.api",
)


def _pure_modules() -> list[str]:
    names = []
    for package in PURE:
        for path in sorted((ROOT / "gateway" / package).glob("*.py")):
            stem = "" if path.stem == "__init__" else f".{path.stem}"
            names.append(f"gateway.{package}{stem}")
    return names


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def _imports(module: str) -> set[str]:
    """The modules ``module``'s source names in its import statements (any depth in the
    file, ``if TYPE_CHECKING`` blocks included: a type-only import still points the way)."""
    path = ROOT / Path(*module.split("."))
    source = (path / "__init__.py") if path.is_dir() else path.with_suffix(".py")
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_pure_packages_are_found() -> None:
    modules = _pure_modules()
    assert "gateway.config.load" in modules
    assert "gateway.core.frontdoor" in modules
    assert len(modules) > 10


@pytest.mark.parametrize("module", _pure_modules())
def test_a_pure_module_names_no_io_module(module: str) -> None:
    assert sorted(name for name in _imports(module) if _forbidden(name)) == []


def test_the_scan_sees_a_forbidden_import() -> None:
    # The scan itself: an import of trio would be found (a test that cannot fail is a defect).
    assert _forbidden("trio") and _forbidden("gateway.ws.connection")
    assert not _forbidden("gateway.core.address") and not _forbidden("trio_x")
    assert "gateway.auth.upstream" not in _imports("gateway.config.load")


def test_importing_every_pure_module_loads_nothing_that_runs() -> None:
    """All of them in a fresh interpreter: what they pull in, transitively (the scan above
    names the direct culprit)."""
    script = (
        "import importlib, json, sys\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *_pure_modules()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(result.stdout)
    assert "gateway.config.load" in loaded
    assert [name for name in loaded if _forbidden(name)] == []


def test_the_wheel_lists_every_package_of_gateway_and_no_top_level_plugins() -> None:
    """pyproject lists its packages (``plugins/`` installs as ``gateway_plugins``): a package
    added under ``gateway/`` must be listed, or the wheel would ship without it."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "gateway").rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == on_disk | {"gateway_plugins"}
    assert setuptools["package-dir"] == {"gateway_plugins": "plugins"}
