"""Reload the config of a running gateway (SIGHUP, ``gateway reload``) without dropping a
session: the trio side of :mod:`gateway.config.reload`.

1. Load and validate the file (the same checks as ``gateway check``), then build the next
   :class:`gateway.app.Snapshot`: plugins of new and replaced mounts are loaded, the
   authenticators and the cookie key ring are made again (new auth keys), the proxy runtime
   is made again if ``[proxy]`` changed.  Anything failing here changes nothing: the error is
   logged with its key path and the running snapshot stays.
2. Enter the lifespans of the new plugin instances (a lifespan that fails to start also
   changes nothing).
3. Swap: ``app.current`` is replaced in one assignment, together with the retuned mounts'
   settings, the per-client limits and the broker's list of local mounts, all in one trio
   step (no await between them): a request sees one generation or the next.  Connections
   and sessions already open keep what they were admitted with (a session's engine limits
   and its mount were fixed at its handshake).
4. Retire: a removed mount's sessions get 1001 after ``server.shutdown_timeout``, then its
   plugin's lifespan is left; a replaced plugin instance keeps its open sessions and its
   lifespan is left once its last session has ended.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

import trio

from gateway.app import App, MountRuntime, attach_broker, build_snapshot
from gateway.config.reload import plan
from gateway.config.schema import Config, MountConfig
from gateway.errors import ConfigError

log = logging.getLogger("gateway.server")

REMOVED_REASON = "endpoint removed"
RETIRE_POLL = 0.1  # seconds between looks at a retired mount's sessions


async def reload(
    app: App,
    load: Callable[[], Config],
    nursery: trio.Nursery,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """Reload from ``load()`` (the config file with the command line's options); ``True``
    when the new config runs.  ``nursery`` runs the retirements (the server's)."""
    environ = os.environ if environ is None else environ
    try:
        loaded = load()
    except ConfigError as exc:
        log.error("reload failed, still running the previous config: %s", exc)  # noqa: TRY400
        return False
    old = app.current
    decided = plan(old.config, loaded)
    if decided.kept:
        log.warning(
            "reload: %s changed; a restart applies %s (kept as running)",
            ", ".join(decided.kept),
            "it" if len(decided.kept) == 1 else "them",
        )
    keep = {*decided.unchanged, *decided.retuned}

    def reuse(mc: MountConfig) -> MountRuntime | None:
        return old.mounts[mc.name] if mc.name in keep else None

    try:
        snapshot = build_snapshot(
            decided.config,
            environ,
            reuse,
            generation=old.generation + 1,
            proxy=None if decided.proxy_changed else old.proxy,
        )
    except ConfigError as exc:  # PluginLoadError is one
        log.error("reload failed, still running the previous config: %s", exc)  # noqa: TRY400
        return False
    fresh = [snapshot.mounts[name] for name in (*decided.added, *decided.replaced)]
    try:
        await app.enter_lifespans(fresh)
    except Exception:
        log.exception("reload failed (a plugin lifespan did not start); previous config kept")
        return False

    # -- the swap: no await from here to the end of the function's synchronous part ----------
    for name in decided.retuned:
        runtime = snapshot.mounts[name]
        assert runtime.config is not None
        runtime.mount.config = runtime.config
        runtime.mount.settings = runtime.config.websocket
    retiring = [old.mounts[name] for name in (*decided.removed, *decided.replaced)]
    app.retired.extend(retiring)
    if decided.proxy_changed and old.proxy is not None:
        app.retired_proxies.append(old.proxy)
    app.limits.retune(decided.config)
    app.current = snapshot
    if app.broker is not None:
        attach_broker(app.broker, snapshot.mounts.values(), app.retired)
    log.info(
        "reloaded %s (generation %d): %s",
        decided.config.source,
        snapshot.generation,
        decided.describe(),
    )
    for name in decided.removed:
        nursery.start_soon(_retire_removed, app, old.mounts[name])
    for name in decided.replaced:
        nursery.start_soon(_retire_replaced, app, old.mounts[name])
    return True


async def _retire_removed(app: App, runtime: MountRuntime) -> None:
    """A removed mount: its sessions get ``shutdown_timeout`` to end on their own, then 1001;
    once they are gone (or after ``shutdown_timeout`` more), its lifespan is left."""
    mount = runtime.mount
    timeout = app.config.server.shutdown_timeout
    if len(mount):
        log.info(
            "mount %s removed: its %d sessions close in %.1fs", mount.name, len(mount), timeout
        )
    with trio.move_on_after(timeout):
        await _until_empty(runtime)
    with trio.move_on_after(timeout + RETIRE_POLL):
        while len(mount) or mount.reserved:
            # Again each time: a handshake admitted before the reload may register late.
            mount.close_all(1001, REMOVED_REASON)
            await trio.sleep(RETIRE_POLL)
    await _leave(app, runtime)


async def _retire_replaced(app: App, runtime: MountRuntime) -> None:
    """A replaced plugin instance serves its open sessions to their end, then its lifespan
    is left."""
    await _until_empty(runtime)
    await _leave(app, runtime)


async def _until_empty(runtime: MountRuntime) -> None:
    mount = runtime.mount
    while len(mount) or mount.reserved:  # noqa: ASYNC110 (a Mount has no "empty" event)
        await trio.sleep(RETIRE_POLL)


async def _leave(app: App, runtime: MountRuntime) -> None:
    if runtime in app.retired:
        app.retired.remove(runtime)
    if app.broker is not None:
        attach_broker(app.broker, app.mounts.values(), app.retired)
    await app.leave_lifespan(runtime)
