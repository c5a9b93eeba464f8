"""The configuration's shape: frozen dataclasses, one per TOML table.

Field names are the TOML keys; defaults are the documented defaults (README, "Configuration
reference"; docs/design.md says where the limits come from).  Values are checked by
:mod:`gateway.config.validate`; cross-field rules live in :mod:`gateway.config.load`.

Values with a syntax of their own (listen addresses, networks, upstream and auth URLs) are
parsed here, once, when a table is made (``__post_init__``), and kept parsed beside the text
they came from (fields with ``init=False``: never TOML keys, never compared); the rest of the
gateway reads the parsed form.  A value that does not parse raises :class:`ConfigError` naming
its key, which :func:`gateway.config.validate.build` puts under the table's path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from gateway.core.address import ListenAddress, Network, parse_listen, parse_networks
from gateway.core.upstream import AuthURL, Upstream, parse_upstream
from gateway.errors import ConfigError

KiB = 1024
MiB = 1024 * KiB

T = TypeVar("T")


def _parse(parse: Callable[[str], T], value: str, key: str) -> T:
    try:
        return parse(value)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def _parse_each(parse: Callable[[str], T], values: Sequence[str], key: str) -> tuple[T, ...]:
    return tuple(_parse(parse, value, f"{key}[{i}]") for i, value in enumerate(values))


def _network(value: str) -> Network:
    return parse_networks([value])[0]


@dataclass(frozen=True)
class TLSConfig:
    cert: str
    key: str


@dataclass(frozen=True)
class ServerConfig:
    listen: tuple[str, ...] = ("127.0.0.1:8080",)
    unknown_path: Literal["destroy", "404"] = "destroy"
    max_connections: int = field(default=10_000, metadata={"min": 1})
    shutdown_timeout: float = field(default=10.0, metadata={"min": 0})
    drain_delay: float = field(default=0.0, metadata={"min": 0})
    # Allowed Host names ("*": any; "*.example.com": its subdomains), against DNS rebinding;
    # None: localhost/127.0.0.1/[::1] when every listen address is loopback, else any.
    hosts: tuple[str, ...] | None = None
    tls: TLSConfig | None = None
    # Worker processes accepting on the same addresses ("auto": one per CPU); more than one
    # needs [broker] (gateway.config.load.check_workers).
    workers: int | Literal["auto"] = field(default=1, metadata={"min": 1})
    # Proxies in front of the gateway (IPs or CIDR networks): for connections from them the
    # client is read from X-Forwarded-For (gateway.core.address); proxy.trusted_proxies joins it.
    trusted_proxies: tuple[str, ...] = ()
    # Where `gateway serve` writes its pid (the supervisor's with --workers), for `gateway
    # reload`; relative to the config file's folder.  None: no pid file.
    pid_file: str | None = None
    listen_addresses: tuple[ListenAddress, ...] = field(init=False, repr=False, compare=False)
    trusted_networks: tuple[Network, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "listen_addresses", _parse_each(parse_listen, self.listen, "listen")
        )
        object.__setattr__(
            self, "trusted_networks", _parse_each(_network, self.trusted_proxies, "trusted_proxies")
        )


@dataclass(frozen=True)
class HttpConfig:
    static_root: str | None = None
    index_file: str = "index.html"
    health_path: str = "/healthz"
    ready_path: str = "/readyz"
    max_request_line: int = field(default=8 * KiB, metadata={"min": 64})
    max_header_line: int = field(default=8 * KiB, metadata={"min": 64})
    max_headers: int = field(default=128, metadata={"min": 1})
    max_head_bytes: int = field(default=16 * KiB, metadata={"min": 256})
    keepalive_timeout: float = field(default=5.0, metadata={"min": 0})
    head_timeout: float = field(default=10.0, metadata={"min": 0})
    max_requests_per_connection: int = field(default=1000, metadata={"min": 1})
    max_body_size: int = field(default=1 * MiB, metadata={"min": 0})


@dataclass(frozen=True)
class AuthConfig:
    cookie_name: str = "gateway_session"
    secret_env: str = "GATEWAY_SECRET"
    max_age: float = field(default=86_400.0, metadata={"min": 1})


AuthMode = Literal["none", "optional", "required", "upstream"]


@dataclass(frozen=True)
class WebSocketConfig:
    """Defaults for every mount; each key may be repeated in a ``[plugins.NAME]`` table."""

    origins: tuple[str, ...] | None = None  # None: same origin as Host
    require_origin: bool = False
    subprotocols: tuple[str, ...] = ()
    compression: Literal["none", "deflate"] = "none"  # permessage-deflate, opt-in
    auth: AuthMode = "none"
    authenticator: str | None = None  # "module:callable"; default: the signed cookie
    auth_url: str | None = None  # auth = "upstream": the legacy site's "who is this?" URL
    auth_user_header: str = "X-User"  # its response header naming the user (else JSON "user")
    auth_cache_ttl: float = field(default=0.0, metadata={"min": 0})  # 0: ask every time
    max_message_size: int = field(default=1 * MiB, metadata={"min": 1})
    max_fragments: int = field(default=1024, metadata={"min": 1})
    max_frame_rate: float = field(default=1000.0, metadata={"min": 0})  # 0: no limit
    ping_interval: float = field(default=20.0, metadata={"min": 0})  # 0: no keepalive
    ping_timeout: float = field(default=20.0, metadata={"min": 0.1})  # 0 would fail every ping
    inbound_queue: int = field(default=16, metadata={"min": 1})
    inbound_queue_bytes: int = field(default=1 * MiB, metadata={"min": 1})
    outbound_queue_bytes: int = field(default=1 * MiB, metadata={"min": 1})
    # permessage-deflate: bytes inflated per second per connection (5 s burst); 0: no limit
    max_inflate_rate: float = field(default=1.0 * MiB, metadata={"min": 0})
    max_connections: int = field(default=10_000, metadata={"min": 1})
    handshake_timeout: float = field(default=10.0, metadata={"min": 0})
    close_timeout: float = field(default=10.0, metadata={"min": 0})
    auth_target: AuthURL | None = field(init=False, repr=False, compare=False)  # auth_url, parsed

    def __post_init__(self) -> None:
        target = None if self.auth_url is None else _parse(AuthURL.parse, self.auth_url, "auth_url")
        object.__setattr__(self, "auth_target", target)


@dataclass(frozen=True)
class MountConfig:
    """One ``[plugins.NAME]`` table: a plugin mounted on a path template."""

    name: str
    path: str
    use: str
    options: dict[str, Any]
    websocket: WebSocketConfig


@dataclass(frozen=True)
class ProxyRoute:
    """One ``[[proxy.routes]]`` entry: requests whose path starts with ``prefix`` (segment-wise)
    go to ``upstream``."""

    prefix: str
    upstream: str
    request_buffering: bool | None = None  # None: proxy.request_buffering
    destination: Upstream = field(init=False, repr=False, compare=False)  # upstream, parsed

    def __post_init__(self) -> None:
        object.__setattr__(self, "destination", _parse(parse_upstream, self.upstream, "upstream"))


@dataclass(frozen=True)
class ProxyConfig:
    """``[proxy]``: the legacy HTTP site behind the gateway (nginx's ``proxy_pass``)."""

    upstream: str | None = None  # "http://host:port"; None (and no routes): proxying is off
    connect_timeout: float = field(default=5.0, metadata={"min": 0})
    read_timeout: float = field(default=60.0, metadata={"min": 0})
    max_body_size: int = field(default=1 * MiB, metadata={"min": 0})
    # nginx's proxy_request_buffering: read a request body whole before going upstream
    request_buffering: bool = True
    body_timeout: float = field(default=60.0, metadata={"min": 0})  # the whole body: 408
    body_buffer_size: int = field(default=64 * KiB, metadata={"min": 0})  # in memory, then file
    body_temp_dir: str | None = None  # where larger bodies are spooled; None: the system's
    # idle keep-alive per upstream: as many as exchanges in flight (10 hit 85% at 20 clients)
    pool_size: int = field(default=32, metadata={"min": 0})
    trusted_proxies: tuple[str, ...] = ()  # IPs/CIDRs whose X-Forwarded-For is extended
    preserve_host: bool = True
    routes: tuple[ProxyRoute, ...] = ()
    default_upstream: Upstream | None = field(
        init=False, repr=False, compare=False
    )  # upstream, parsed
    trusted_networks: tuple[Network, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        default = (
            None if self.upstream is None else _parse(parse_upstream, self.upstream, "upstream")
        )
        object.__setattr__(self, "default_upstream", default)
        object.__setattr__(
            self, "trusted_networks", _parse_each(_network, self.trusted_proxies, "trusted_proxies")
        )


@dataclass(frozen=True)
class BrokerConfig:
    """``[broker]``: Redis pub/sub between gateway processes (no table: one process, no Redis).

    Every channel and key is named under ``prefix``, so deployments can share one Redis.
    """

    url: str  # "redis://[user:password@]host:port/db" or "rediss://..." (TLS)
    password_env: str | None = None  # the password from this environment variable instead
    prefix: str = "gateway"
    required: bool = False  # /readyz answers 503 until Redis is connected
    publish_queue: int = field(default=10_000, metadata={"min": 1})  # broadcasts waiting to go
    connect_timeout: float = field(default=2.0, metadata={"min": 0})
    timeout: float = field(default=1.0, metadata={"min": 0})  # an awaited reply (counts)
    retry_max_delay: float = field(default=0.5, metadata={"min": 0})  # reconnect back-off cap
    node_ttl: float = field(default=5.0, metadata={"min": 1})  # a silent node's counts expire


@dataclass(frozen=True)
class LimitsConfig:
    """``[limits]``: per client address (gateway.core.limiter), each worker its share."""

    connections_per_client: int = field(default=256, metadata={"min": 0})  # 0: no limit
    handshakes_per_second: float = field(default=20.0, metadata={"min": 0})  # 0: no limit
    handshake_burst: int = field(default=40, metadata={"min": 1})
    requests_per_second: float = field(default=0.0, metadata={"min": 0})  # proxied; 0: off
    request_burst: int = field(default=100, metadata={"min": 1})
    ipv6_prefix: int = field(default=64, metadata={"min": 16, "max": 128})
    table_size: int = field(default=10_000, metadata={"min": 1})  # clients remembered (LRU)


@dataclass(frozen=True)
class LogConfig:
    """``[log]``: the log's format and level (``--log-format``/``--log-level`` override them)
    and the access log."""

    format: Literal["text", "json"] = "text"
    level: str = "info"  # any case: debug, info, warning, error, critical
    access: bool = False  # a line per HTTP request and per refused handshake
    access_rate: float = field(default=1000.0, metadata={"min": 1})  # access lines a second


@dataclass(frozen=True)
class AdminConfig:
    """``[admin]``: the operators' listener (``/metrics``, the status page), never the public
    port; no table: no admin listener at all."""

    listen: str  # "127.0.0.1:9090"; keep it on loopback or a private network
    listen_address: ListenAddress = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "listen_address", _parse(parse_listen, self.listen, "listen"))


@dataclass(frozen=True)
class Config:
    server: ServerConfig = ServerConfig()
    http: HttpConfig = HttpConfig()
    auth: AuthConfig = AuthConfig()
    websocket: WebSocketConfig = WebSocketConfig()
    plugins: tuple[MountConfig, ...] = ()
    source: str = "<defaults>"  # the file it came from, for messages
    proxy: ProxyConfig = ProxyConfig()
    broker: BrokerConfig | None = None  # [broker]: None runs in-process only
    limits: LimitsConfig = LimitsConfig()
    admin: AdminConfig | None = None  # [admin]: metrics and the status page; None: off
    log: LogConfig = LogConfig()

    @property
    def trusted_networks(self) -> tuple[Network, ...]:
        """The one list of trusted proxies: ``server.trusted_proxies`` and
        ``proxy.trusted_proxies`` (kept for configs written before the server's)."""
        return self.server.trusted_networks + self.proxy.trusted_networks
