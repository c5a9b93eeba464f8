"""The assembled gateway: config -> routing policy, mounts with loaded plugins, auth, state.

:func:`build` does every check that needs imports or the environment (plugins load and their
options validate, authenticators import, the cookie secret exists), so ``gateway check`` and
``gateway serve`` refuse a bad deployment with the same message before opening a port.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from gateway.auth import Authenticator, CookieAuthenticator
from gateway.auth_upstream import UpstreamAuthenticator
from gateway.broker.shell import Broker
from gateway.broker.subscriptions import Route
from gateway.client_limits import ClientLimits
from gateway.config.load import allowed_hosts
from gateway.config.schema import Config, WebSocketConfig
from gateway.core import cookies
from gateway.core.decisions import MountRoute
from gateway.core.frontdoor import HeadLimits, Policy
from gateway.core.routing import Router, Template
from gateway.core.upstream import ProxyRoutes, parse_upstream
from gateway.errors import ConfigError, PluginLoadError
from gateway.mount import Mount
from gateway.plugins import LoadedPlugin, import_object, load
from gateway.proxy.forward import ProxyRuntime

# At shutdown, how long a connection accepted just before may still send its first request
# (a handshake in flight then gets its 503 instead of a reset).
FIRST_REQUEST_GRACE = 0.5


@dataclass
class MountRuntime:
    """A mount with what serving it needs."""

    mount: Mount
    plugin: LoadedPlugin
    authenticator: Authenticator | None


@dataclass
class App:
    """Everything a connection handler consults, plus the server-wide state."""

    config: Config
    policy: Policy
    mounts: dict[str, MountRuntime]
    static_root: Path | None
    keyring: cookies.KeyRing | None
    draining: bool = False  # /readyz 503, new handshakes 503
    stopping: bool = False  # no new requests at all: idle connections close
    # HTTP connections waiting for a request's first byte -> "is it their first request?"
    idle_http: dict[trio.CancelScope, bool] = field(default_factory=dict)
    connections: int = 0
    idle: trio.Event = field(default_factory=trio.Event)
    proxy: ProxyRuntime | None = None  # [proxy]: upstream pools; None when proxying is off
    broker: Broker | None = None  # [broker]: Redis between processes; None: this one only
    # [limits]: per-client connection caps and handshake/request rates
    limits: ClientLimits = field(default_factory=lambda: ClientLimits.from_config(Config()))

    @property
    def ready(self) -> bool:
        """What /readyz says: not draining, and with ``broker.required``, Redis connected."""
        if self.draining:
            return False
        broker = self.broker
        return broker is None or not broker.config.required or broker.connected

    @asynccontextmanager
    async def lifespans(self) -> AsyncIterator[None]:
        """Enter every class plugin's lifespan (in mount order), leave them in reverse."""
        async with AsyncExitStack() as stack:
            if self.broker is not None:  # first in, last out: it outlives every session
                nursery = await stack.enter_async_context(trio.open_nursery())
                stack.callback(nursery.cancel_scope.cancel)
                await nursery.start(self.broker.run)
            if self.proxy is not None:
                stack.push_async_callback(self.proxy.pools.aclose)  # left last: after serving
            for runtime in self.mounts.values():
                instance = runtime.plugin.instance
                if instance is not None:
                    await stack.enter_async_context(instance.lifespan())
            yield

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
        for runtime in self.mounts.values():
            runtime.mount.close_all(1001, "server shutting down")

    def connection_opened(self) -> None:
        self.connections += 1
        if self.idle.is_set():
            self.idle = trio.Event()

    def connection_closed(self) -> None:
        self.connections -= 1
        if self.connections == 0:
            self.idle.set()


def build(config: Config, environ: Mapping[str, str] | None = None) -> App:
    """Load plugins and authenticators for ``config``; raises :class:`ConfigError`."""
    environ = os.environ if environ is None else environ
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
        mount = Mount(mc)
        plugin = load(mount)
        authenticator = _authenticator(mc.name, mc.websocket, keyring, config)
        mounts[mc.name] = MountRuntime(mount, plugin, authenticator)
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
    )
    static_root = Path(config.http.static_root) if config.http.static_root else None
    app = App(config, policy, mounts, static_root, keyring)
    # The proxy trusts X-Forwarded-For from both lists (server.trusted_proxies is the one
    # definition; proxy.trusted_proxies is kept for configs written before it).
    trusted = config.proxy.trusted_proxies + config.server.trusted_proxies
    app.proxy = ProxyRuntime.build(dataclasses.replace(config.proxy, trusted_proxies=trusted))
    app.limits = ClientLimits.from_config(config)
    app.broker = _broker(config, mounts, environ)
    app.idle.set()
    return app


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
    broker.attach(
        _LocalMounts({name: runtime.mount for name, runtime in mounts.items()}),
        {name: runtime.mount.settings.max_message_size for name, runtime in mounts.items()},
    )
    for runtime in mounts.values():
        runtime.mount.cluster = broker
    return broker


@dataclass
class _LocalMounts:
    """This process's mounts, as the broker delivers to and counts them."""

    mounts: dict[str, Mount]

    def deliver(self, route: Route, message: str | bytes) -> int:
        mount = self.mounts.get(route.mount)
        return mount.deliver(route, message) if mount is not None else 0

    def local_counts(self) -> Iterator[tuple[Route, int]]:
        for mount in self.mounts.values():
            yield mount.route, len(mount)
            for group in mount.groups.values():
                yield group.route, len(group)


def _proxy_routes(config: Config) -> ProxyRoutes | None:
    """The front door's view of ``[proxy]`` (validated by the loader), or ``None`` if off."""
    proxy = config.proxy
    if proxy.upstream is None and not proxy.routes:
        return None
    default = parse_upstream(proxy.upstream) if proxy.upstream is not None else None
    streamed: list[str | None] = [
        r.prefix
        for r in proxy.routes
        if not (proxy.request_buffering if r.request_buffering is None else r.request_buffering)
    ]
    if not proxy.request_buffering:
        streamed.append(None)  # the default upstream follows proxy.request_buffering
    return ProxyRoutes(
        ((r.prefix, parse_upstream(r.upstream)) for r in proxy.routes), default, streamed=streamed
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
        assert ws.auth_url is not None  # checked by gateway.config.load
        return UpstreamAuthenticator(
            ws.auth_url,
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
