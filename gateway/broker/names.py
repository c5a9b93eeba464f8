"""Every Redis channel and key the broker uses, all under ``broker.prefix``.

Channels: ``PREFIX:m:MOUNT`` (a mount's broadcast), ``PREFIX:g:MOUNT:GROUP`` (a group's),
``PREFIX:u:MOUNT:USER`` (every session of one user on a mount).  Keys: ``PREFIX:count:...``
(a hash per counted target: node id -> that node's local count) and ``PREFIX:node:NODE`` (a
node is alive while this key exists; it expires ``node_ttl`` after its last refresh).  Mount
names cannot contain ``:`` (the config allows letters, digits, ``-``, ``_``), so a name never
reads as another; groups and users may contain anything (Redis names are binary-safe).
"""

from __future__ import annotations

from gateway.broker.subscriptions import Route


def _text(value: str) -> bytes:
    # surrogatepass: a name decoded from a URL may hold lone surrogates; it must still map
    # to one channel, the same one on every node.
    return value.encode("utf-8", "surrogatepass")


def _target(route: Route) -> bytes:
    if route.kind == "m":
        return b"m:" + _text(route.mount)
    return route.kind.encode() + b":" + _text(route.mount) + b":" + _text(route.name)


def channel(prefix: str, route: Route) -> bytes:
    return _text(prefix) + b":" + _target(route)


def count_key(prefix: str, route: Route) -> bytes:
    return _text(prefix) + b":count:" + _target(route)


def node_key_prefix(prefix: str) -> bytes:
    return _text(prefix) + b":node:"


def node_key(prefix: str, node: bytes) -> bytes:
    return node_key_prefix(prefix) + node.hex().encode()
