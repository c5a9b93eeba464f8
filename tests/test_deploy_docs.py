"""docs/deploy.md's snippets, checked where no test can run them: the Dockerfile (no docker
engine here: each instruction parsed, every file it copies exists, its command line is one
the CLI accepts), the systemd unit (its ExecStart parses, reload is SIGHUP, the hardening
options are there), every TOML snippet loads, and Prometheus scrapes the admin listener.
The nginx block runs in tests/integration/test_nginx.py."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import tomllib
from pathlib import Path

import trustme

from gateway.cli import _parser
from gateway.config.load import parse
from tests.support.docs import REPO, block, blocks

DOC = "docs/deploy.md"


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` per line (no continuation lines in ours)."""
    out = []
    for line in dockerfile.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, rest = line.strip().partition(" ")
            out.append((name.upper(), rest.strip()))
    return out


def test_dockerfile_builds_from_files_that_exist_and_runs_a_valid_command() -> None:
    steps = instructions(block(DOC, "dockerfile"))
    known = {"FROM", "WORKDIR", "COPY", "RUN", "USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD"}
    assert {name for name, _ in steps} <= known
    assert steps[0][0] == "FROM" and re.fullmatch(r"python:3\.1[1-9][\w.-]*", steps[0][1])
    copied = []
    for name, args in steps:
        if name == "COPY":
            *sources, _target = args.split()
            copied.extend(sources)
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: no such file in the repo"
    # pip install . needs the package's own files and the plugins it packages
    assert {"pyproject.toml", "README.md", "gateway", "plugins"} <= set(copied)
    entry = json.loads(next(args for name, args in steps if name == "ENTRYPOINT"))
    cmd = json.loads(next(args for name, args in steps if name == "CMD"))
    assert entry == ["gateway"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "gateway" in scripts
    parsed = _parser().parse_args(cmd)
    assert parsed.func.__name__ == "_serve" and parsed.log_format == "json"
    assert (REPO / parsed.config).is_file()  # relative to WORKDIR /app, where config.toml is
    port = int(parsed.listen[0].rsplit(":", 1)[1])
    assert ("EXPOSE", str(port)) in steps
    health = next(args for name, args in steps if name == "HEALTHCHECK")
    assert f"127.0.0.1:{port}/healthz" in health
    assert ("USER", "gateway") in steps  # not root


def test_systemd_unit_starts_reloads_and_is_hardened() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(block(DOC, "ini"))
    service = unit["Service"]
    command = shlex.split(service["ExecStart"])
    assert command[0].endswith("/gateway")
    args = _parser().parse_args(command[1:])
    assert args.func.__name__ == "_serve"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    for option in (
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "RestrictAddressFamilies",
        "CapabilityBoundingSet",
    ):
        assert option in service, option
    assert service["User"] != "root"
    # The drain must fit in the stop timeout (the nginx example's config).
    server = tomllib.loads(blocks(DOC, "toml")[0])["server"]
    drain = server.get("drain_delay", 0) + server["shutdown_timeout"]
    assert int(service["TimeoutStopSec"]) > drain


def test_every_toml_snippet_is_a_valid_config(tmp_path: Path) -> None:
    cert = trustme.CA().issue_cert("chat.example.com")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "fullchain.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "privkey.pem"))
    snippets = blocks(DOC, "toml")
    assert len(snippets) == 3
    for text in snippets:
        text = text.replace("/etc/gateway/", f"{tmp_path}/")
        config = parse(tomllib.loads(text), base_dir=REPO)
        assert config.server.listen


def test_nginx_trusts_and_forwards_what_the_gateway_reads() -> None:
    location = block(DOC, "nginx")
    assert "proxy_http_version 1.1;" in location
    for header in ("Upgrade", "Connection", "X-Forwarded-For", "X-Forwarded-Proto"):
        assert f"proxy_set_header {header} " in location
    timeout = int(re.search(r"proxy_read_timeout (\d+)s;", location)[1])  # type: ignore[index]
    gateway = parse(tomllib.loads(blocks(DOC, "toml")[0]), base_dir=REPO)
    assert timeout > gateway.websocket.ping_interval
    upstream = re.search(r"proxy_pass http://([\d.]+):(\d+);", location)
    assert upstream is not None
    assert f"{upstream[1]}:{upstream[2]}" in gateway.server.listen
    assert upstream[1] in gateway.server.trusted_proxies


def test_prometheus_scrapes_the_admin_listener() -> None:
    scrape = block(DOC, "yaml")
    targets = re.findall(r'targets: \["([^"]+)"\]', scrape)
    admin = tomllib.loads(blocks(DOC, "toml")[2])["admin"]["listen"]
    assert targets == [admin]
