"""Building the app: plugin loading, options validation, secrets — errors name key paths."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.app import build
from gateway.config.load import parse
from gateway.errors import ConfigError, PluginLoadError

SECRET = {"GATEWAY_SECRET": "s" * 32}


def app_error(plugins: dict[str, Any], environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build(parse({"plugins": plugins}), environ=SECRET if environ is None else environ)
    return info.value


def test_builds_the_default_mounts() -> None:
    app = build(parse({"plugins": {"e": {"path": "/e", "use": "plugins.echo:echo"}}}), environ={})
    assert list(app.mounts) == ["e"]
    assert app.keyring is None  # no mount authenticates: no secret needed


@pytest.mark.parametrize(
    ("use", "message"),
    [
        ("plugins.nope:x", "plugins.a.use: no module named 'plugins.nope'"),
        ("plugins.echo:nope", "plugins.a.use: module 'plugins.echo' has no attribute 'nope'"),
        ("plugins.echo", "plugins.a.use: expected 'module:attribute'"),
        ("plugins.echo:echo()", "plugins.a.use: expected 'module:attribute'"),
        ("gateway.api:Session", "plugins.a.use: 'gateway.api:Session' is neither"),
    ],
)
def test_plugin_load_errors(use: str, message: str) -> None:
    err = app_error({"a": {"path": "/a", "use": use}})
    assert isinstance(err, PluginLoadError)
    assert str(err).startswith(message)


def test_import_time_error_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    err = app_error({"a": {"path": "/a", "use": "broken_plugin:x"}})
    assert "importing 'broken_plugin' failed: RuntimeError: boom at import" in str(err)
    sys.modules.pop("broken_plugin", None)


def test_options_are_validated_against_the_plugin_type() -> None:
    err = app_error(
        {
            "chat": {
                "path": "/c/{r}",
                "use": "plugins.chat:Chat",
                "options": {"max_message_chars": "x"},
            }
        }
    )
    assert str(err) == "plugins.chat.options.max_message_chars: expected int, got string"


def test_unknown_option_is_an_error() -> None:
    err = app_error(
        {"chat": {"path": "/c/{r}", "use": "plugins.chat:Chat", "options": {"colour": 1}}}
    )
    assert str(err).startswith("plugins.chat.options.colour: unknown key")


def test_function_plugins_take_no_options() -> None:
    err = app_error({"e": {"path": "/e", "use": "plugins.echo:echo", "options": {"x": 1}}})
    assert str(err).startswith("plugins.e.options.x: unknown key")


def test_cookie_auth_needs_the_secret_in_the_environment() -> None:
    err = app_error(
        {"e": {"path": "/e", "use": "plugins.echo:echo", "auth": "required"}}, environ={}
    )
    assert str(err).startswith("auth.secret_env: environment variable GATEWAY_SECRET is not set")


def test_a_too_short_secret_is_refused_without_echoing_it() -> None:
    err = app_error(
        {"e": {"path": "/e", "use": "plugins.echo:echo", "auth": "required"}},
        environ={"GATEWAY_SECRET": "tiny-secret"},
    )
    assert err.path == "auth.secret_env"
    assert "tiny-secret" not in str(err)


def test_custom_authenticator_must_be_callable() -> None:
    err = app_error(
        {
            "e": {
                "path": "/e",
                "use": "plugins.echo:echo",
                "auth": "required",
                "authenticator": "gateway.core.cookies:VERSION",
            }
        }
    )
    assert str(err) == "plugins.e.authenticator: 'gateway.core.cookies:VERSION' is not callable"


def test_the_same_class_mounted_twice_gets_two_instances() -> None:
    app = build(
        parse(
            {
                "plugins": {
                    "foo": {
                        "path": "/foo",
                        "use": "plugins.multi:Multi",
                        "options": {"label": "F"},
                    },
                    "bar": {"path": "/bar", "use": "plugins.multi:Multi"},
                }
            }
        ),
        environ={},
    )
    foo, bar = (app.mounts[n].plugin.instance for n in ("foo", "bar"))
    assert foo is not None and bar is not None and foo is not bar
    assert (foo.options.label, bar.options.label) == ("F", "")
    assert (foo.mount.name, bar.mount.name) == ("foo", "bar")
