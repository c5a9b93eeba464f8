"""The package as a plugin author gets it: a wheel built from this tree, installed outside the
repository, and the README's plugin, test and config run from a project of their own.

Everything the plugin author is told is read from README.md ("Write a plugin", "Test a
plugin", "Use it in your project"), never copied here: the snippets must run as written.
Offline and bounded: ``pip wheel --no-build-isolation`` (setuptools from the test extra),
``pip install --no-deps --no-index --target``, then subprocesses with ``PYTHONPATH`` set to the
install folder and the project folder, from the project folder (not this repository).
"""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
TIMEOUT = 60  # seconds for each subprocess; the whole module takes a few seconds
_FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def readme_block(language: str, containing: str) -> str:
    """The one README block tagged ``language`` that contains ``containing``."""
    found = [
        m[2]
        for m in _FENCE.finditer(README.read_text("utf-8"))
        if m[1] == language and containing in m[2]
    ]
    assert len(found) == 1, f"README.md: {len(found)} ```{language} blocks with {containing!r}"
    return found[0]


def project_name() -> str:
    data = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    name = data["project"]["name"]
    assert isinstance(name, str)
    return name


@dataclass
class Installed:
    site: Path  # where pip installed the wheel (--target)
    project: Path  # a plugin author's project: the README's files

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYTEST"))}
        env["PYTHONPATH"] = os.pathsep.join([str(self.site), str(self.project)])
        env["GATEWAY_SECRET"] = "a-secret-for-the-package-test-0123456789"
        return subprocess.run(
            [sys.executable, *args],
            cwd=self.project,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )


def _pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("package")
    source = root / "source"  # a copy, so the build leaves nothing in the repository
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in ("gateway", "plugins"):
        shutil.copytree(REPO / package, source / package, ignore=ignore)
    wheels = root / "wheels"
    _pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source))
    (wheel,) = wheels.glob("*.whl")
    site = root / "site"
    _pip("install", "--quiet", "--no-deps", "--no-index", "--target", str(site), str(wheel))

    project = root / "project"  # the plugin author's, from the README
    (project / "myapp").mkdir(parents=True)
    plugin = readme_block("python", "# myapp/shout.py")
    (project / "myapp" / "shout.py").write_text(plugin)
    (project / "test_shout.py").write_text(readme_block("python", "from gateway.testing import"))
    (project / "pyproject.toml").write_text(readme_block("toml", "trio_mode"))
    (project / "config.toml").write_text(readme_block("toml", "[plugins.shout]"))
    return Installed(site, project)


def test_the_wheel_is_the_published_name_and_imports_from_where_it_was_installed(
    installed: Installed,
) -> None:
    done = installed.run(
        "-c",
        "import gateway, gateway.api, gateway_plugins.echo, importlib.metadata as m; "
        f"print(gateway.__file__); print(m.version({project_name()!r}))",
    )
    assert done.returncode == 0, done.stderr
    where, version = done.stdout.split()
    assert Path(where).is_relative_to(installed.site)  # not this repository's copy
    data = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    assert version == data["project"]["version"]
    (info,) = installed.site.glob("*.dist-info")
    assert (info / "METADATA").is_file()
    assert (installed.site / "gateway" / "py.typed").is_file()  # typed for mypy in their project
    # The first-party plugins install as gateway_plugins: no top-level "plugins" to clash with
    # a project's own package of that name.
    assert (installed.site / "gateway_plugins" / "relay.py").is_file()
    assert not (installed.site / "plugins").exists()
    done = installed.run("-m", "gateway", "--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"gateway {version}"), done.stderr


def test_the_readme_pip_command_names_the_distribution_and_its_testing_extra(
    installed: Installed,
) -> None:
    command = readme_block("sh", "pip install").strip()
    assert command.startswith("pip install "), command
    requirement = Requirement(command.removeprefix("pip install ").strip().strip("\"'"))
    assert requirement.name == project_name()
    assert requirement.extras == {"testing"}
    # The extra brings what the README's test needs.
    (info,) = installed.site.glob("*.dist-info")
    metadata = email.parser.Parser().parsestr((info / "METADATA").read_text("utf-8"))
    testing = [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]
    needed = {r.name for r in testing if r.marker and r.marker.evaluate({"extra": "testing"})}
    assert {"pytest", "pytest-trio"} <= needed


def test_the_readme_plugin_passes_the_readme_test_as_written(installed: Installed) -> None:
    done = installed.run("-m", "pytest", "-q", "-p", "no:cacheprovider", "test_shout.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b1 passed\b", done.stdout), done.stdout


def test_gateway_check_takes_the_readme_config_and_refuses_a_path_without_channel(
    installed: Installed,
) -> None:
    done = installed.run("-m", "gateway", "check", "--config", "config.toml")
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout
    wrong = installed.project / "wrong.toml"
    config = (installed.project / "config.toml").read_text()
    wrong.write_text(config.replace("/shout/{channel}", "/shout/{room}"))
    done = installed.run("-m", "gateway", "check", "--config", "wrong.toml")
    assert done.returncode == 2
    assert "plugins.shout.path: '/shout/{room}' has no {channel} segment" in done.stderr
    assert "myapp.shout:Shout" in done.stderr
