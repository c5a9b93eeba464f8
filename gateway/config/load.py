"""Read ``config.toml`` into a :class:`Config`, checking everything that can be checked
without importing plugins (that is :mod:`gateway.plugins`' job) or touching the network.

Rules beyond the types (listen addresses, networks and URLs are parsed by the tables
themselves, :mod:`gateway.config.schema`): paths are valid templates that neither repeat nor
overlap nor shadow the health paths; origins are real origins; ``"*"`` origins are refused on a
mount that authenticates (cross-site WebSocket hijacking: any page could open a socket carrying
the visitor's cookie); relative file paths are relative to the config file's folder.

Pure: imports nothing of trio or of the gateway's I/O shells (tests/test_layout.py).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.config.schema import (
    AdminConfig,
    AuthConfig,
    BrokerConfig,
    Config,
    HttpConfig,
    LimitsConfig,
    LogConfig,
    MountConfig,
    ProxyConfig,
    ServerConfig,
    WebSocketConfig,
)
from gateway.config.validate import Errors, build, describe
from gateway.core import origin
from gateway.core.routing import Template
from gateway.errors import ConfigError
from gateway.log import parse_level

_TABLES = {
    "server",
    "http",
    "auth",
    "websocket",
    "plugins",
    "proxy",
    "broker",
    "limits",
    "log",
    "admin",
}
_MOUNT_KEYS = {"path", "use", "options"}
_WS_KEYS = {f.name for f in dataclasses.fields(WebSocketConfig) if f.init}
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def load_file(path: str | Path) -> Config:
    """Read and check the TOML file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"cannot read config file {path}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path}: invalid TOML: {exc}") from None
    return parse(data, source=str(path), base_dir=path.resolve().parent)


def parse(
    data: dict[str, Any], *, source: str = "<config>", base_dir: Path | None = None
) -> Config:
    """Check already-parsed TOML ``data``; see the module docstring."""
    base_dir = base_dir or Path.cwd()
    errors = Errors()  # every table is checked, so one run reports every problem
    for key in data:
        if key not in _TABLES:
            known = ", ".join(sorted(_TABLES))
            errors.add(ConfigError(key, f"unknown table (known tables: {known})"))
    server = errors.attempt(lambda: _server(data, base_dir), ServerConfig())
    http = errors.attempt(
        lambda: _http(build(HttpConfig, data.get("http", {}), "http"), base_dir), HttpConfig()
    )
    auth = errors.attempt(lambda: build(AuthConfig, data.get("auth", {}), "auth"), AuthConfig())
    websocket = errors.attempt(
        lambda: _websocket(
            build(WebSocketConfig, data.get("websocket", {}), "websocket"), "websocket"
        ),
        WebSocketConfig(),
    )
    mounts = _mounts(data.get("plugins", {}), websocket, http, errors)
    proxy = errors.attempt(
        lambda: _proxy(build(ProxyConfig, data.get("proxy", {}), "proxy")), ProxyConfig()
    )
    broker = None
    if "broker" in data:
        broker = errors.attempt(
            lambda: _broker(build(BrokerConfig, data["broker"], "broker")), None
        )
    limits = errors.attempt(
        lambda: build(LimitsConfig, data.get("limits", {}), "limits"), LimitsConfig()
    )
    log = errors.attempt(lambda: _log(build(LogConfig, data.get("log", {}), "log")), LogConfig())
    admin = None
    if "admin" in data:
        admin = errors.attempt(lambda: _admin(data["admin"], server), None)
    errors.check()
    config = Config(
        server,
        http,
        auth,
        websocket,
        mounts,
        source,
        proxy=proxy,
        broker=broker,
        limits=limits,
        log=log,
        admin=admin,
    )
    check_workers(config)
    return config


def _server(data: dict[str, Any], base_dir: Path) -> ServerConfig:
    server = build(ServerConfig, data.get("server", {}), "server")
    if not server.listen:
        raise ConfigError("server.listen", "needs at least one address")
    if server.hosts is not None:
        server = dataclasses.replace(server, hosts=_hosts(server.hosts))
    if server.tls is not None:
        server = dataclasses.replace(
            server,
            tls=dataclasses.replace(
                server.tls,
                cert=_existing_file(base_dir, server.tls.cert, "server.tls.cert"),
                key=_existing_file(base_dir, server.tls.key, "server.tls.key"),
            ),
        )
    if server.pid_file is not None:
        server = dataclasses.replace(server, pid_file=str((base_dir / server.pid_file).resolve()))
    return server


def _log(log: LogConfig) -> LogConfig:
    """``level`` in any case (stored uppercase)."""
    try:
        return dataclasses.replace(log, level=parse_level(log.level))
    except ValueError as exc:
        raise ConfigError("log.level", str(exc)) from None


def _admin(data: object, server: ServerConfig) -> AdminConfig:
    """``[admin] listen`` parses and is not one of the public addresses: ``/metrics`` and the
    status page are for operators, never served where clients connect."""
    admin = build(AdminConfig, data, "admin")
    host, port = admin.listen_address
    for i, (public_host, public_port) in enumerate(server.listen_addresses):
        wildcard = {host, public_host} & {"0.0.0.0", "::", ""}
        if port != 0 and port == public_port and (host == public_host or wildcard):
            raise ConfigError(
                "admin.listen",
                f"{admin.listen!r} is the public address server.listen[{i}]: the admin "
                "listener needs an address of its own",
            )
    return admin


def check_workers(config: Config, key: str = "server.workers") -> None:
    """More than one worker needs ``[broker]``: without it each worker's broadcasts, rooms and
    counts would reach only the clients of that worker, silently.  ``"auto"`` is refused too,
    whatever this machine's CPU count: the same file must not pass here and fail elsewhere."""
    workers = config.server.workers
    if config.broker is None and (workers == "auto" or workers > 1):
        raise ConfigError(
            key,
            f"{workers!r} workers need a [broker] table (broker.url): without one, broadcasts, "
            "chat rooms and client counts would silently reach only the clients of the worker "
            "that sent them",
        )


def allowed_hosts(server: ServerConfig) -> tuple[str, ...] | None:
    """The Host names the front door accepts (``None``: any): ``server.hosts``, or when it is
    unset the loopback names if every listen address is loopback (issue 9: DNS rebinding)."""
    if server.hosts is not None:
        return None if origin.ANY in server.hosts else server.hosts
    return origin.default_hosts(tuple(a.host for a in server.listen_addresses))


def _hosts(hosts: tuple[str, ...]) -> tuple[str, ...]:
    """``server.hosts`` entries, normalised (lowercase, no trailing dot); no ports."""
    normalized = []
    for i, value in enumerate(hosts):
        pattern = origin.normalize_host_pattern(value)
        if pattern is None:
            raise ConfigError(
                f"server.hosts[{i}]",
                f"expected a host name or address without a port ('gw.example', '10.0.0.1', "
                f"'[::1]'), '*.domain' or '*', got {value!r}",
            )
        normalized.append(pattern)
    if not normalized:
        raise ConfigError("server.hosts", "empty: no request could be served (use '*' for any)")
    return tuple(normalized)


def _proxy(proxy: ProxyConfig) -> ProxyConfig:
    """Route prefixes are distinct absolute paths; timeouts are positive; the temporary
    folder is writable (the upstreams and trusted proxies parsed with the table)."""
    for key in ("connect_timeout", "read_timeout", "body_timeout"):
        if getattr(proxy, key) <= 0:
            raise ConfigError(f"proxy.{key}", "must be > 0")
    if proxy.body_temp_dir is not None and not (
        os.path.isdir(proxy.body_temp_dir) and os.access(proxy.body_temp_dir, os.W_OK | os.X_OK)
    ):
        raise ConfigError(
            "proxy.body_temp_dir", f"{proxy.body_temp_dir!r} is not a writable directory"
        )
    seen: dict[str, int] = {}
    for i, route in enumerate(proxy.routes):
        where = f"proxy.routes[{i}]"
        if not route.prefix.startswith("/") or any(c in route.prefix for c in "?# "):
            raise ConfigError(
                f"{where}.prefix", f"must be a URL path starting with '/': {route.prefix!r}"
            )
        if route.prefix in seen:
            raise ConfigError(
                f"{where}.prefix", f"{route.prefix!r} repeats proxy.routes[{seen[route.prefix]}]"
            )
        seen[route.prefix] = i
    return proxy


_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _broker(broker: BrokerConfig) -> BrokerConfig:
    """``url`` is ``redis://`` or ``rediss://`` with a host, an optional port and an optional
    ``/db`` number, and nothing else; a password comes from the URL or ``password_env``, not
    both; ``prefix`` is a plain name (it starts every channel and key)."""
    try:
        parts = urlsplit(broker.url)
        port = parts.port
    except ValueError as exc:  # the text names the port, never the password
        raise ConfigError("broker.url", f"not a URL: {exc}") from None
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(
            "broker.url", f"must start with redis:// or rediss:// (TLS), not {parts.scheme!r}://"
        )
    if not parts.hostname:
        raise ConfigError("broker.url", "needs a host")  # never echoed: it may hold a password
    if port == 0:
        raise ConfigError("broker.url", "port must be 1-65535")
    db = parts.path.removeprefix("/")
    if db and not (db.isdigit() and int(db) < 65536):
        raise ConfigError("broker.url", f"the path is the database number (/0), got {parts.path!r}")
    if parts.query or parts.fragment:
        raise ConfigError("broker.url", "takes no query or fragment (set options in [broker])")
    if broker.password_env is not None:
        if not _ENV_NAME.fullmatch(broker.password_env):
            raise ConfigError(
                "broker.password_env", f"not an environment variable name: {broker.password_env!r}"
            )
        if parts.password is not None:
            raise ConfigError(
                "broker.password_env", "the URL has a password too: give it in one place only"
            )
    if not _PREFIX.fullmatch(broker.prefix):
        raise ConfigError("broker.prefix", "1-64 letters, digits, '_', '-' or '.'")
    for key in ("connect_timeout", "timeout", "retry_max_delay"):
        if getattr(broker, key) <= 0:
            raise ConfigError(f"broker.{key}", "must be > 0")
    return broker


def _existing_file(base_dir: Path, name: str, key: str) -> str:
    path = (base_dir / name).resolve()
    if not path.is_file():
        raise ConfigError(key, f"file not found: {path}")
    return str(path)


def _http(http: HttpConfig, base_dir: Path) -> HttpConfig:
    for key in ("health_path", "ready_path"):
        if not getattr(http, key).startswith("/"):
            raise ConfigError(f"http.{key}", "must start with '/'")
    if http.static_root is None:
        return http
    root = (base_dir / http.static_root).resolve()
    if not root.is_dir():
        raise ConfigError("http.static_root", f"directory not found: {root}")
    if "/" in http.index_file or http.index_file.startswith("."):
        raise ConfigError("http.index_file", "must be a plain file name")
    return dataclasses.replace(http, static_root=str(root))


def _websocket(ws: WebSocketConfig, where: str) -> WebSocketConfig:
    _upstream_auth(ws, where)
    if ws.origins is None:
        return ws
    normalized = []
    for i, value in enumerate(ws.origins):
        if value == origin.ANY:
            normalized.append(value)
            continue
        norm = origin.normalize(value)
        if norm is None:
            raise ConfigError(
                f"{where}.origins[{i}]", f"not an origin like 'https://host[:port]': {value!r}"
            )
        normalized.append(norm)
    if origin.ANY in normalized and ws.auth != "none":
        raise ConfigError(
            f"{where}.origins",
            "'*' is not allowed on a mount with auth: any site could use the visitor's cookie",
        )
    return dataclasses.replace(ws, origins=tuple(normalized))


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2: a header name


def _upstream_auth(ws: WebSocketConfig, where: str) -> None:
    """``auth = "upstream"`` needs an ``auth_url`` (an absolute ``http://`` URL, parsed with
    the table) and no custom authenticator; ``auth_user_header`` must be a header name."""
    if not _TOKEN.fullmatch(ws.auth_user_header):
        raise ConfigError(
            f"{where}.auth_user_header", f"not a header name: {ws.auth_user_header!r}"
        )
    if ws.auth == "upstream":
        if ws.auth_url is None:
            raise ConfigError(f"{where}.auth_url", "required with auth = 'upstream'")
        if ws.authenticator is not None:
            raise ConfigError(f"{where}.authenticator", "cannot be combined with auth = 'upstream'")


def _mounts(
    table: object, defaults: WebSocketConfig, http: HttpConfig, errors: Errors | None = None
) -> tuple[MountConfig, ...]:
    """Every ``[plugins.NAME]`` table; with ``errors``, a bad mount is noted there and the
    others are still checked."""
    errors = Errors() if errors is None else errors
    if not isinstance(table, dict):
        errors.add(ConfigError("plugins", f"expected table, got {describe(table)}"))
        return ()
    mounts: list[MountConfig] = []
    templates: list[tuple[str, Template]] = []
    for name, raw in table.items():
        mount = errors.attempt(
            lambda: _mount(name, raw, defaults, http, templates),  # noqa: B023 (called now)
            None,
        )
        if mount is not None:
            mounts.append(mount)
    return tuple(mounts)


def _mount(
    name: str,
    raw: object,
    defaults: WebSocketConfig,
    http: HttpConfig,
    templates: list[tuple[str, Template]],
) -> MountConfig:
    where = f"plugins.{name}"
    if not _NAME.fullmatch(name):
        raise ConfigError(where, "mount names use letters, digits, '-' and '_'")
    if not isinstance(raw, dict):
        raise ConfigError(where, f"expected table, got {describe(raw)}")
    for key in raw:
        if key not in _MOUNT_KEYS and key not in _WS_KEYS:
            known = ", ".join(sorted(_MOUNT_KEYS | _WS_KEYS))
            raise ConfigError(f"{where}.{key}", f"unknown key (known keys: {known})")
    for key in ("path", "use"):
        if key not in raw:
            raise ConfigError(f"{where}.{key}", "missing required key")
        if not isinstance(raw[key], str):
            raise ConfigError(f"{where}.{key}", f"expected string, got {describe(raw[key])}")
    options = raw.get("options", {})
    if not isinstance(options, dict):
        raise ConfigError(f"{where}.options", f"expected table, got {describe(options)}")
    template = _template(raw["path"], f"{where}.path", http, templates)
    templates.append((where, template))
    merged = {**_as_raw(defaults), **{k: v for k, v in raw.items() if k in _WS_KEYS}}
    ws = _websocket(build(WebSocketConfig, merged, where), where)
    return MountConfig(name, raw["path"], raw["use"], dict(options), ws)


def _template(path: str, key: str, http: HttpConfig, seen: list[tuple[str, Template]]) -> Template:
    try:
        template = Template.parse(path)
    except ValueError as exc:
        raise ConfigError(key, f"invalid path {path!r}: {exc}") from None
    for reserved in (http.health_path, http.ready_path):
        if template.match(reserved[1:].split("/")) is not None:
            raise ConfigError(key, f"{path!r} shadows the health path {reserved!r}")
    for other_where, other in seen:
        if template.overlaps(other):
            what = "duplicates" if other.source == path else "overlaps"
            raise ConfigError(key, f"{path!r} {what} {other_where}.path {other.source!r}")
    return template


def _as_raw(ws: WebSocketConfig) -> dict[str, Any]:
    # None means "not set" for the optional keys, so leave those out rather than pass None.
    return {
        f.name: v
        for f in dataclasses.fields(ws)
        if f.init and (v := getattr(ws, f.name)) is not None
    }
