"""The assembled gateway: config -> routing policy, mounts with loaded plugins, auth, state.

:func:`build` does every check that needs imports or the environment (plugins load and their
options validate, authenticators import, the cookie secret exists), so ``gateway check`` and
``gateway serve`` refuse a bad deployment with the same message before opening a port.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from gateway.access import AccessLog
from gateway.auth import Authenticator
from gateway.auth.cookie import CookieAuthenticator
from gateway.auth.upstream import UpstreamAuthenticator
from gateway.broker.shell import Broker
from gateway.broker.subscriptions import Route
from gateway.client_limits import ClientLimits
from gateway.config.load import allowed_hosts
from gateway.config.schema import Config, MountConfig, WebSocketConfig
from gateway.core import cookies
from gateway.core.decisions import MountRoute
from gateway.core.frontdoor import HeadLimits, Policy
from gateway.core.routing import Router, Template
from gateway.core.upstream import ProxyRoutes
from gateway.errors import ConfigError, PluginLoadError
from gateway.mount import Mount
from gateway.plugins import LoadedPlugin, import_object, load
from gateway.proxy.forward import ProxyRuntime
from gateway.stats import Stats

# At shutdown, how long a connection accepted just before may still send its first request
# (a handshake in flight then gets its 503 instead of a reset).
FIRST_REQUEST_GRACE = 0.5


@dataclass(eq=False)
class MountRuntime:
    """A mount with what serving it needs, as of one config generation: a reload that keeps
    the plugin makes a new runtime around the same :class:`Mount` and plugin instance with
    the new ``config`` (settings for new sessions) and authenticator."""

    mount: Mount
    plugin: LoadedPlugin
    authenticator: Authenticator | None
    config: MountConfig | None = None  # the mount's config in this generation

    @property
    def settings(self) -> WebSocketConfig:
        """The WebSocket settings new sessions of this generation get."""
        return self.mount.settings if self.config is None else self.config.websocket


@dataclass(frozen=True)
class Snapshot:
    """One generation of everything decided from the config: the routing policy, the mounts
    with their plugins and authenticators, the proxy routes, the access log.  Immutable: a
    reload (SIGHUP, :mod:`gateway.reloader`) builds a new one and replaces
    :attr:`App.current` in one assignment, so a request sees one generation or the next,
    never a mix; a session keeps the :class:`MountRuntime` it was admitted on."""

    config: Config
    policy: Policy
    mounts: Mapping[str, MountRuntime]
    static_root: Path | None
    keyring: cookies.KeyRing | None
    proxy: ProxyRuntime | None = None  # [proxy]: upstream pools; None when proxying is off
    access: AccessLog | None = None  # [log] access = true; None: off (one check per request)
    generation: int = 1


@dataclass
class App:
    """The current :class:`Snapshot` (what a connection handler consults), plus the
    server-wide state that outlives reloads."""

    current: Snapshot
    draining: bool = False  # /readyz 503, new handshakes 503
    stopping: bool = False  # no new requests at all: idle connections close
    # HTTP connections waiting for a request's first byte -> "is it their first request?"
    idle_http: dict[trio.CancelScope, bool] = field(default_factory=dict)
    connections: int = 0
    idle: trio.Event = field(default_factory=trio.Event)
    broker: Broker | None = None  # [broker]: Redis between processes; None: this one only
    # [limits]: per-client connection caps and handshake/request rates
    limits: ClientLimits = field(default_factory=lambda: ClientLimits.from_config(Config()))
    # Mounts no longer in ``current`` whose sessions are still open (a removed mount until
    # its sessions are closed, a replaced plugin instance until its last session ends);
    # shutdown closes them too.
    retired: list[MountRuntime] = field(default_factory=list)
    # Proxy runtimes of earlier generations: requests in flight may still use their pools,
    # which are closed at shutdown.
    retired_proxies: list[ProxyRuntime] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)  # counters for metrics (gateway.admin)
    _lifespans: _Lifespans | None = None  # while lifespans() runs

    # The current generation's parts, read where a request starts (each request reads
    # ``current`` once per value; a reload between two reads is harmless: see reloader).
    @property
    def config(self) -> Config:
        return self.current.config

    @property
    def policy(self) -> Policy:
        return self.current.policy

    @property
    def mounts(self) -> Mapping[str, MountRuntime]:
        return self.current.mounts

    @property
    def static_root(self) -> Path | None:
        return self.current.static_root

    @property
    def keyring(self) -> cookies.KeyRing | None:
        return self.current.keyring

    @property
    def proxy(self) -> ProxyRuntime | None:
        return self.current.proxy

    @property
    def access(self) -> AccessLog | None:
        return self.current.access

    @property
    def ready(self) -> bool:
        """What /readyz says: not draining, and with ``broker.required``, Redis connected."""
        if self.draining:
            return False
        broker = self.broker
        return broker is None or not broker.config.required or broker.connected

    @asynccontextmanager
    async def lifespans(self) -> AsyncIterator[None]:
        """Enter every class plugin's lifespan (in mount order), leave them in reverse.

        Each lifespan runs in a task of its own, so a reload can enter a new mount's and
        leave a removed one's (:meth:`enter_lifespans`, :meth:`leave_lifespan`) while the
        others carry on."""
        async with AsyncExitStack() as stack:
            if self.broker is not None:  # first in, last out: it outlives every session
                nursery = await stack.enter_async_context(trio.open_nursery())
                stack.callback(nursery.cancel_scope.cancel)
                await nursery.start(self.broker.run)
            stack.push_async_callback(self._close_pools)  # left last: after serving
            holders = await stack.enter_async_context(trio.open_nursery())
            self._lifespans = _Lifespans(holders)
            stack.push_async_callback(self._lifespans.leave_all)
            await self.enter_lifespans(self.mounts.values())
            yield

    async def enter_lifespans(self, runtimes: Iterable[MountRuntime]) -> None:
        """Enter the lifespans of ``runtimes``' class plugins, in order (inside
        :meth:`lifespans`); raises what a lifespan raised on entry, after leaving those
        entered here."""
        assert self._lifespans is not None, "enter_lifespans outside lifespans()"
        entered: list[MountRuntime] = []
        try:
            for runtime in runtimes:
                if runtime.plugin.instance is not None:
                    await self._lifespans.enter(runtime)
                    entered.append(runtime)
        except BaseException:
            for runtime in reversed(entered):
                await self.leave_lifespan(runtime)
            raise

    async def leave_lifespan(self, runtime: MountRuntime) -> None:
        """Leave ``runtime``'s plugin lifespan (a removed or replaced mount, once its
        sessions are gone); nothing if it has none or has left already."""
        if self._lifespans is not None:
            await self._lifespans.leave(runtime)

    async def _close_pools(self) -> None:
        for proxy in (self.proxy, *self.retired_proxies):
            if proxy is not None:
                await proxy.pools.aclose()

    def start_draining(self) -> None:
        """Graceful shutdown: new handshakes get 503, idle keep-alive connections close now,
        fresh ones get ``FIRST_REQUEST_GRACE`` to send their request, open WebSockets get
        1001."""
        self.draining = True
        self.stopping = True
        now = trio.current_time()
        for scope, first in list(self.idle_http.items()):
            if first:
                scope.deadline = min(scope.deadline, now + FIRST_REQUEST_GRACE)
            else:
                scope.cancel()
        for runtime in (*self.mounts.values(), *self.retired):
            runtime.mount.close_all(1001, "server shutting down")

    def connection_opened(self) -> None:
        self.connections += 1
        if self.idle.is_set():
            self.idle = trio.Event()

    def connection_closed(self) -> None:
        self.connections -= 1
        if self.connections == 0:
            self.idle.set()


@dataclass
class _Holder:
    release: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)


@dataclass
class _Lifespans:
    """Plugin lifespans, each held open by a task of ``nursery`` until released."""

    nursery: trio.Nursery
    held: list[tuple[MountRuntime, _Holder]] = field(default_factory=list)

    async def enter(self, runtime: MountRuntime) -> None:
        holder = _Holder()
        await self.nursery.start(self._hold, runtime, holder)
        self.held.append((runtime, holder))

    @staticmethod
    async def _hold(
        runtime: MountRuntime, holder: _Holder, *, task_status: trio.TaskStatus[None]
    ) -> None:
        instance = runtime.plugin.instance
        assert instance is not None
        try:
            async with instance.lifespan():
                task_status.started()
                await holder.release.wait()
        finally:
            holder.done.set()

    async def leave(self, runtime: MountRuntime) -> None:
        for i, (held, holder) in enumerate(self.held):
            if held is runtime:
                del self.held[i]
                holder.release.set()
                await holder.done.wait()
                return

    async def leave_all(self) -> None:
        while self.held:  # in reverse order of entry
            await self.leave(self.held[-1][0])


def build(config: Config, environ: Mapping[str, str] | None = None) -> App:
    """Load plugins and authenticators for ``config``; raises :class:`ConfigError`."""
    environ = os.environ if environ is None else environ
    snapshot = build_snapshot(config, environ)
    app = App(snapshot)
    app.limits = ClientLimits.from_config(config)
    app.broker = _broker(config, snapshot.mounts, environ)
    app.idle.set()
    return app


def build_snapshot(
    config: Config,
    environ: Mapping[str, str],
    reuse: Callable[[MountConfig], MountRuntime | None] = lambda mc: None,
    generation: int = 1,
    proxy: ProxyRuntime | None = None,
) -> Snapshot:
    """Everything decided from ``config``.  A reload passes ``reuse``: the running
    :class:`MountRuntime` to keep for a mount whose plugin (``use``, ``options``) is
    unchanged (its sessions, groups and plugin instance carry on), and the running
    ``proxy`` when ``[proxy]`` is unchanged (its pools carry on)."""
    _importable_from(config.source)
    keyring = None
    if any(_uses_cookie(m.websocket) for m in config.plugins):
        try:
            keyring = cookies.KeyRing.from_env(config.auth.secret_env, environ)
        except ValueError as exc:
            users = [m.name for m in config.plugins if _uses_cookie(m.websocket)]
            raise ConfigError(
                "auth.secret_env", f"{exc} (needed for cookie auth by plugins.{users[0]})"
            ) from None
    mounts: dict[str, MountRuntime] = {}
    routes: list[tuple[Template, MountRoute]] = []
    for mc in config.plugins:
        authenticator = _authenticator(mc.name, mc.websocket, keyring, config)
        kept = reuse(mc)
        if kept is not None:
            mounts[mc.name] = MountRuntime(kept.mount, kept.plugin, authenticator, mc)
        else:
            mount = Mount(mc)
            mounts[mc.name] = MountRuntime(mount, load(mount), authenticator, mc)
        route = MountRoute(mc.name, mc.websocket.origins, mc.websocket.require_origin)
        routes.append((Template.parse(mc.path), route))
    policy = Policy(
        router=Router(routes),
        health_path=config.http.health_path,
        ready_path=config.http.ready_path,
        static=config.http.static_root is not None,
        unknown_path=config.server.unknown_path,
        limits=HeadLimits(
            max_request_line=config.http.max_request_line,
            max_header_line=config.http.max_header_line,
            max_headers=config.http.max_headers,
            max_head_bytes=config.http.max_head_bytes,
        ),
        proxy=_proxy_routes(config),
        hosts=allowed_hosts(config.server),
        trusted=config.trusted_networks,
    )
    static_root = Path(config.http.static_root) if config.http.static_root else None
    if proxy is None:
        # The proxy trusts X-Forwarded-For from both lists (server.trusted_proxies is the one
        # definition; proxy.trusted_proxies is kept for configs written before it).
        proxy = ProxyRuntime.build(config.proxy, config.trusted_networks)
    access = AccessLog(config.log.access_rate) if config.log.access else None
    return Snapshot(
        config, policy, mounts, static_root, keyring, proxy, access, generation=generation
    )


def _broker(
    config: Config, mounts: Mapping[str, MountRuntime], environ: Mapping[str, str]
) -> Broker | None:
    """The broker for ``[broker]`` (its password read from the environment now, so a missing
    one stops ``check`` and ``serve``), attached to every mount; ``None`` without the table."""
    if config.broker is None:
        return None
    password = None
    if config.broker.password_env is not None:
        password = environ.get(config.broker.password_env)
        if not password:
            raise ConfigError(
                "broker.password_env",
                f"environment variable {config.broker.password_env} is not set",
            )
    broker = Broker(config.broker, password)
    attach_broker(broker, mounts.values(), ())
    return broker


def attach_broker(
    broker: Broker, runtimes: Iterable[MountRuntime], retired: Iterable[MountRuntime]
) -> None:
    """Deliver the broker's messages to these mounts (a reload calls it again with the new
    generation's, and the retired ones whose sessions are still open)."""
    current = list(runtimes)
    local: dict[str, list[Mount]] = {}
    for runtime in (*current, *retired):
        runtime.mount.cluster = broker
        local.setdefault(runtime.mount.name, []).append(runtime.mount)
    broker.attach(_LocalMounts(local), {r.mount.name: r.settings.max_message_size for r in current})


@dataclass
class _LocalMounts:
    """This process's mounts, as the broker delivers to and counts them (after a reload
    that replaced a plugin, a name may have two: the new one and the one whose sessions
    are still open)."""

    mounts: dict[str, list[Mount]]

    def deliver(self, route: Route, message: str | bytes) -> int:
        return sum(mount.deliver(route, message) for mount in self.mounts.get(route.mount, ()))

    def local_counts(self) -> Iterator[tuple[Route, int]]:
        counts: dict[Route, int] = {}
        for mounts in self.mounts.values():
            for mount in mounts:
                counts[mount.route] = counts.get(mount.route, 0) + len(mount)
                for group in mount.groups.values():
                    counts[group.route] = counts.get(group.route, 0) + len(group)
        yield from counts.items()


def _proxy_routes(config: Config) -> ProxyRoutes | None:
    """The front door's view of ``[proxy]`` (validated by the loader), or ``None`` if off."""
    proxy = config.proxy
    if proxy.upstream is None and not proxy.routes:
        return None
    streamed: list[str | None] = [
        r.prefix
        for r in proxy.routes
        if not (proxy.request_buffering if r.request_buffering is None else r.request_buffering)
    ]
    if not proxy.request_buffering:
        streamed.append(None)  # the default upstream follows proxy.request_buffering
    return ProxyRoutes(
        ((r.prefix, r.destination) for r in proxy.routes),
        proxy.default_upstream,
        streamed=streamed,
    )


def _importable_from(source: str) -> None:
    """Plugins named in a config import relative to the config file's folder (as uvicorn's
    ``--app-dir``), so a project's own plugins need no packaging."""
    folder = str(Path(source).resolve().parent) if source.endswith(".toml") else None
    if folder is not None and folder not in sys.path:
        sys.path.insert(0, folder)


def _uses_cookie(ws: WebSocketConfig) -> bool:
    """Whether a mount authenticates with the signed cookie (so the secret is needed)."""
    return ws.auth in ("optional", "required") and ws.authenticator is None


def _authenticator(
    name: str, ws: WebSocketConfig, keyring: cookies.KeyRing | None, config: Config
) -> Authenticator | None:
    if ws.auth == "upstream":
        assert ws.auth_target is not None  # checked by gateway.config.load
        return UpstreamAuthenticator(
            ws.auth_target,
            user_header=ws.auth_user_header,
            cache_ttl=ws.auth_cache_ttl,
            proto="https" if config.server.tls is not None else "http",
        )
    spec = ws.authenticator
    if spec is not None:
        obj = import_object(spec, f"plugins.{name}.authenticator")
        if not callable(obj):
            raise PluginLoadError(f"plugins.{name}.authenticator", f"{spec!r} is not callable")
        return obj  # type: ignore[no-any-return]
    if keyring is None:
        return None
    return CookieAuthenticator(keyring, config.auth.cookie_name, config.auth.max_age)
