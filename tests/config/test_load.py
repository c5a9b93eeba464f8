"""config.toml rules beyond types: tables, listen addresses, paths, origins, files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config.load import load_file, parse
from gateway.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def mount(path: object = "/echo", **extra: Any) -> dict[str, Any]:
    return {"path": path, "use": "plugins.echo:echo", **extra}


def error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data, base_dir=REPO)
    return str(info.value)


def test_the_default_config_loads() -> None:
    config = load_file(REPO / "config.toml")
    names = [m.name for m in config.plugins]
    assert names == ["echo", "foo", "bar", "chat", "clock", "classic_chat", "classic_time", "hello"]
    assert config.http.static_root == str(REPO / "examples" / "public")
    foo = next(m for m in config.plugins if m.name == "foo")
    assert foo.options == {"label": "Foo server"}


def test_mount_keys_override_websocket_defaults() -> None:
    config = parse(
        {
            "websocket": {"max_message_size": 1000, "origins": ["HTTPS://A.example:443"]},
            "plugins": {"a": mount(max_message_size=50), "b": mount("/b")},
        }
    )
    a, b = config.plugins
    assert (a.websocket.max_message_size, b.websocket.max_message_size) == (50, 1000)
    assert a.websocket.origins == ("https://a.example",)  # inherited, normalised


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"servr": {}}, "servr: unknown table"),
        ({"server": {"lisen": []}}, "server.lisen: unknown key"),
        ({"server": {"listen": ["localhost"]}}, "server.listen[0]: expected 'host:port'"),
        ({"server": {"listen": ["1.2.3.4:70000"]}}, "server.listen[0]: port must be 0-65535"),
        ({"server": {"listen": []}}, "server.listen: needs at least one address"),
        ({"server": {"unknown_path": "drop"}}, "server.unknown_path: expected one of"),
        ({"http": {"static_root": "no/such/dir"}}, "http.static_root: directory not found"),
        ({"http": {"health_path": "healthz"}}, "http.health_path: must start with '/'"),
        ({"auth": {"max_age": 0}}, "auth.max_age: must be >= 1"),
        ({"websocket": {"origins": ["example.com"]}}, "websocket.origins[0]: not an origin"),
        ({"plugins": {"a": {"use": "plugins.echo:echo"}}}, "plugins.a.path: missing required key"),
        ({"plugins": {"a": {"path": "/a"}}}, "plugins.a.use: missing required key"),
        ({"plugins": {"a": mount(pth="/x")}}, "plugins.a.pth: unknown key"),
        ({"plugins": {"a": mount(path=5)}}, "plugins.a.path: expected string, got int"),
        ({"plugins": {"a": mount(options=[])}}, "plugins.a.options: expected table"),
        (
            {"plugins": {"a": mount(max_message_size="1")}},
            "plugins.a.max_message_size: expected int",
        ),
        ({"plugins": {"a": mount(auth="yes")}}, "plugins.a.auth: expected one of"),
        ({"plugins": {"a": mount(ping_timeout=0)}}, "plugins.a.ping_timeout: must be >= 0.1"),
        ({"plugins": {"a": mount("echo")}}, "plugins.a.path: invalid path 'echo'"),
        ({"plugins": {"a b": mount()}}, "plugins.a b: mount names use"),
        ({"plugins": {"a": mount("/healthz")}}, "plugins.a.path: '/healthz' shadows the health"),
        (
            {"plugins": {"a": mount("/x"), "b": mount("/x")}},
            "plugins.b.path: '/x' duplicates plugins.a.path '/x'",
        ),
        (
            {"plugins": {"a": mount("/chat/{room}"), "b": mount("/chat/lobby")}},
            "plugins.b.path: '/chat/lobby' overlaps plugins.a.path '/chat/{room}'",
        ),
        (
            {"plugins": {"a": mount(auth="required", origins=["*"])}},
            "plugins.a.origins: '*' is not allowed on a mount with auth",
        ),
        (
            {"server": {"tls": {"cert": "nope.pem", "key": "nope.key"}}},
            "server.tls.cert: file not found",
        ),
    ],
)
def test_errors(data: dict[str, Any], message: str) -> None:
    assert error(data).startswith(message)


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server\n")
    with pytest.raises(ConfigError, match="bad.toml: invalid TOML"):
        load_file(path)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_file("/nonexistent/config.toml")


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "gw.toml").write_text('[http]\nstatic_root = "site"\n')
    assert load_file(tmp_path / "gw.toml").http.static_root == str(tmp_path / "site")


def test_every_error_is_reported_not_only_the_first() -> None:
    from gateway.errors import ConfigErrors

    data = {
        "server": {"lisen": 1, "shutdown_timeout": "x"},
        "http": {"max_headers": 0},
        "nonsense": {},
        "plugins": {
            "a": {"path": "/a"},
            "b": {"path": "/b", "use": "plugins.echo:echo", "max_message_size": "big"},
        },
        "log": {"level": "loud"},
    }
    with pytest.raises(ConfigErrors) as caught:
        parse(data)
    paths = [error.path for error in caught.value.errors]
    assert paths == [
        "nonsense",
        "server.lisen",
        "server.shutdown_timeout",
        "http.max_headers",
        "plugins.a.use",
        "plugins.b.max_message_size",
        "log.level",
    ]
    assert len(str(caught.value).splitlines()) == len(paths)
