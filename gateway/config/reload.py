"""What a reload changes: a pure comparison of the running config with the one just loaded.

:func:`plan` says, per mount, whether it is new, removed, replaced (its plugin, ``use`` or
``options``, changed: a new plugin instance serves new sessions, the old one keeps its open
sessions), retuned (only its path or WebSocket settings changed: same plugin instance, new
settings for new sessions) or unchanged; and which keys changed that only a restart can
apply (the listening sockets, the worker count, TLS, the broker, the log's format and level):
those keep their running values and are named in a warning.  The trio side that carries a
plan out is :mod:`gateway.reloader`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gateway.config.schema import Config, MountConfig

# (key path, table, key): keys whose running value is kept until a restart
_RESTART_ONLY: tuple[tuple[str, str, str], ...] = (
    ("server.listen", "server", "listen"),
    ("server.workers", "server", "workers"),
    ("server.tls", "server", "tls"),
    ("server.pid_file", "server", "pid_file"),
    ("server.max_connections", "server", "max_connections"),
    ("log.format", "log", "format"),
    ("log.level", "log", "level"),
    ("limits.ipv6_prefix", "limits", "ipv6_prefix"),
)
# Whole tables only a restart applies.
_RESTART_TABLES = ("broker", "admin")


@dataclass(frozen=True)
class Plan:
    """A reload, decided: ``config`` is what to run (the new file, with restart-only keys
    kept from the running config)."""

    config: Config
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()
    retuned: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()  # key paths that changed but need a restart
    proxy_changed: bool = False  # [proxy] or the trusted proxies: new pools and routes

    def describe(self) -> str:
        """``mounts: +news -old ~chat (new plugin) ~echo (settings)`` for the log line."""
        parts = [f"+{n}" for n in self.added]
        parts += [f"-{n}" for n in self.removed]
        parts += [f"~{n} (new plugin instance)" for n in self.replaced]
        parts += [f"~{n} (settings)" for n in self.retuned]
        return "mounts: " + (" ".join(parts) if parts else "unchanged")


def same_plugin(old: MountConfig, new: MountConfig) -> bool:
    """Whether the running plugin instance can serve ``new``: same ``use`` and ``options``."""
    return old.use == new.use and old.options == new.options


def plan(old: Config, new: Config) -> Plan:
    """Compare ``old`` (running) with ``new`` (just loaded and validated)."""
    kept: list[str] = []
    for path, table, key in _RESTART_ONLY:
        running = getattr(getattr(old, table), key)
        if getattr(getattr(new, table), key) != running:
            kept.append(path)
            new = dataclasses.replace(
                new, **{table: dataclasses.replace(getattr(new, table), **{key: running})}
            )
    for table in _RESTART_TABLES:
        running = getattr(old, table, None)
        if getattr(new, table, None) != running:
            kept.append(table)
            changes: dict[str, Any] = {table: running}
            new = dataclasses.replace(new, **changes)
    before = {m.name: m for m in old.plugins}
    after = {m.name: m for m in new.plugins}
    added = tuple(n for n in after if n not in before)
    removed = tuple(n for n in before if n not in after)
    replaced, retuned, unchanged = [], [], []
    for name, mc in after.items():
        previous = before.get(name)
        if previous is None:
            continue
        if not same_plugin(previous, mc):
            replaced.append(name)
        elif previous != mc:
            retuned.append(name)
        else:
            unchanged.append(name)
    return Plan(
        new,
        added,
        removed,
        tuple(replaced),
        tuple(retuned),
        tuple(unchanged),
        tuple(kept),
        proxy_changed=(old.proxy, old.server.trusted_proxies)
        != (new.proxy, new.server.trusted_proxies),
    )
