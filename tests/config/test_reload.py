"""gateway.config.reload.plan: what a reload changes, decided without trio."""

from __future__ import annotations

from typing import Any

from gateway.config.load import parse
from gateway.config.reload import plan
from gateway.config.schema import Config


def config(**tables: Any) -> Config:
    data: dict[str, Any] = {
        "plugins": {
            "echo": {"path": "/echo", "use": "plugins.echo:echo"},
            "chat": {"path": "/chat/{room}", "use": "plugins.chat:Chat"},
        }
    }
    for name, table in tables.items():
        data[name] = table
    return parse(data)


def test_an_unchanged_config_changes_nothing() -> None:
    decided = plan(config(), config())
    assert decided.unchanged == ("echo", "chat")
    assert decided.added == decided.removed == decided.replaced == decided.retuned == ()
    assert decided.kept == () and not decided.proxy_changed
    assert decided.describe() == "mounts: unchanged"


def test_mounts_added_removed_replaced_and_retuned() -> None:
    new = config(
        plugins={
            "echo": {"path": "/echo2", "use": "plugins.echo:echo", "max_message_size": 10},
            "chat": {"path": "/chat/{room}", "use": "plugins.chat:Chat", "options": {"x": 1}},
            "news": {"path": "/news", "use": "plugins.echo:echo"},
        }
    )
    old = config(
        plugins={
            "echo": {"path": "/echo", "use": "plugins.echo:echo"},
            "chat": {"path": "/chat/{room}", "use": "plugins.chat:Chat"},
            "gone": {"path": "/gone", "use": "plugins.echo:echo"},
        }
    )
    decided = plan(old, new)
    assert decided.added == ("news",)
    assert decided.removed == ("gone",)
    assert decided.replaced == ("chat",)  # its options changed: a new plugin instance
    assert decided.retuned == ("echo",)  # path and settings only: the same instance
    assert decided.config is new
    assert decided.describe() == (
        "mounts: +news -gone ~chat (new plugin instance) ~echo (settings)"
    )


def test_restart_only_keys_keep_their_running_values() -> None:
    old = config(server={"listen": ["127.0.0.1:8080"]}, log={"format": "text"})
    new = config(
        server={"listen": ["127.0.0.1:9999"], "shutdown_timeout": 3.0},
        log={"format": "json", "access": True},
    )
    decided = plan(old, new)
    assert decided.kept == ("server.listen", "log.format")
    assert decided.config.server.listen == ("127.0.0.1:8080",)
    assert decided.config.log.format == "text"
    # ...and everything else takes effect.
    assert decided.config.server.shutdown_timeout == 3.0
    assert decided.config.log.access is True


def test_proxy_changes_are_noticed() -> None:
    old = config(proxy={"upstream": "http://127.0.0.1:9000"})
    assert plan(old, config(proxy={"upstream": "http://127.0.0.1:9001"})).proxy_changed
    assert not plan(old, config(proxy={"upstream": "http://127.0.0.1:9000"})).proxy_changed
    assert plan(
        old,
        config(
            proxy={"upstream": "http://127.0.0.1:9000"}, server={"trusted_proxies": ["10.0.0.1"]}
        ),
    ).proxy_changed
