"""Loading plugins named in the config: ``use = "module:attr"`` -> a ready handler.

Import by dotted path with :mod:`importlib` and ``getattr`` (never ``eval``).  A plugin is
either an ``async def handler(ws, session)`` (takes no options) or a :class:`gateway.api.Plugin`
subclass, whose ``options`` table is validated against its ``options_type`` dataclass so every
error names the key path (``plugins.chat.options.max_members: expected int, got string``).
A plugin's ``path_params`` (the ``{name}`` segments its handler reads) must all be in the
mount's path: ``plugins.shout.path: '/shout/{room}' has no {channel} segment, which
myapp.shout:Shout needs``, at ``gateway check``, not as a 1011 at the first connection.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterable
from dataclasses import dataclass, is_dataclass
from typing import Any

from gateway.api import Handler, NoOptions, Plugin
from gateway.config.validate import build
from gateway.core.routing import Template
from gateway.errors import ConfigError, PluginLoadError
from gateway.mount import Mount

_DOTTED = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


@dataclass(frozen=True)
class LoadedPlugin:
    """What serving a mount needs: the handler to call and the class instance, if any."""

    handler: Handler
    instance: Plugin[Any] | None


def import_object(spec: str, key_path: str) -> Any:
    """Resolve ``"package.module:attr.sub"``; errors name ``key_path`` and say what failed."""
    if not _DOTTED.fullmatch(spec):
        raise PluginLoadError(key_path, f"expected 'module:attribute', got {spec!r}")
    module_name, _, attr_path = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise PluginLoadError(key_path, f"no module named {module_name!r}") from exc
        raise PluginLoadError(key_path, f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:  # a plugin's import-time bug: report it, don't crash
        raise PluginLoadError(
            key_path, f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginLoadError(
                key_path, f"module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    return obj


def load(mount: Mount) -> LoadedPlugin:
    """Import, validate options and instantiate the plugin of ``mount``."""
    config = mount.config
    where = f"plugins.{config.name}"
    obj = import_object(config.use, f"{where}.use")
    if inspect.isclass(obj) and issubclass(obj, Plugin):
        options_type = obj.options_type
        if not is_dataclass(options_type):
            raise PluginLoadError(f"{where}.use", f"{obj.__name__}.options_type is not a dataclass")
        options = build(options_type, config.options, f"{where}.options")
        try:
            instance = obj(options, mount)
        except ConfigError:
            raise  # the plugin named the key path itself (e.g. plugins.NAME.options.url)
        except Exception as exc:
            raise PluginLoadError(
                f"{where}.use", f"{obj.__name__}() failed: {type(exc).__name__}: {exc}"
            ) from exc
        check_path_params(mount, instance.path_params)
        return LoadedPlugin(instance.handle, instance)
    if inspect.iscoroutinefunction(obj):
        build(NoOptions, config.options, f"{where}.options")  # any key is an error
        check_path_params(mount, getattr(obj, "path_params", ()))
        return LoadedPlugin(obj, None)
    raise PluginLoadError(
        f"{where}.use",
        f"{config.use!r} is neither an async function (ws, session) nor a gateway.api.Plugin",
    )


def check_path_params(mount: Mount, needed: Iterable[str]) -> None:
    """Refuse a mount whose path template lacks a parameter its plugin declared it reads
    (``Plugin.path_params``, or a ``path_params`` attribute on a function plugin)."""
    config = mount.config
    if isinstance(needed, str):  # ("room") written for ("room",): a str is no list of names
        raise PluginLoadError(
            f"plugins.{config.name}.use",
            f"{config.use}.path_params must be a tuple of names, got {needed!r}",
        )
    needed = tuple(needed)
    have = Template.parse(config.path).params
    missing = [name for name in needed if name not in have]
    if missing:
        segments = ", ".join(f"{{{name}}}" for name in missing)
        plural = "segments" if len(missing) > 1 else "segment"
        raise ConfigError(
            f"plugins.{config.name}.path",
            f"{config.path!r} has no {segments} {plural}, which {config.use} needs "
            f"(its path_params: {', '.join(needed)})",
        )
