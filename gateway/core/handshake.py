"""RFC 6455 §4.2.1: is this request a valid WebSocket opening handshake?

``validate(request)`` returns what the handshake carries (:class:`HandshakeInfo`) or the
:class:`Reject` to send.  Some servers (wsproto among them) accept a ``Sec-WebSocket-Key`` that
is not 16 bytes of base64 (§4.1: "a randomly selected 16-byte value ... base64-encoded") and an
HTTP/1.0 upgrade (§4.1: "HTTP/1.1 or higher"); the gateway refuses both here, before any plugin
code runs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

import h11

from gateway.core import headers as hdr
from gateway.core.decisions import HandshakeInfo, Reject

# §1.3: the GUID every server appends to the key before hashing.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# RFC 9110 §5.6.2 token, for subprotocol names (§4.1: "elements ... that are tokens").
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9112 §3.2 / RFC 3986 §3.2.2: reg-name or IPv4, or an IP-literal; optional port.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]{0,5})?")

VERSION_HEADER = ("Sec-WebSocket-Version", "13")


def is_websocket_upgrade(request: h11.Request) -> bool:
    """Does the client ask for a WebSocket (``Upgrade: websocket``)?  Cheap: the router asks it
    of every request.  A request that asks for it is routed as an upgrade even if the rest of
    the handshake is broken, so an unknown path is destroyed before anything is validated."""
    return b"websocket" in hdr.tokens(request.headers, b"upgrade")


def valid_host(value: bytes) -> bool:
    """RFC 9112 §3.2: Host is ``uri-host [ ":" port ]``; userinfo (``a@evil``) is not allowed."""
    if not _HOST.fullmatch(value):
        return False
    _, colon, port = value.rpartition(b":")
    return not (colon and not value.endswith(b"]") and port and int(port) > 65535)


def accept_key(key: bytes) -> bytes:
    """§4.2.2 step 5.4: base64(SHA-1(key + GUID)) for ``Sec-WebSocket-Accept``."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())  # SHA-1 is mandated by the RFC


def _valid_key(key: bytes) -> bool:
    # §4.1: "a randomly selected 16-byte value that has been base64-encoded": 24 characters.
    if len(key) != 24:
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        return False


def validate(request: h11.Request) -> HandshakeInfo | Reject:
    """Check an ``Upgrade: websocket`` request; see the module docstring."""
    h = request.headers
    if request.method != b"GET":
        # §4.1: "The method of the request MUST be GET".
        return Reject(405, "WebSocket handshakes must use GET", (("Allow", "GET"),))
    major, _, minor = request.http_version.partition(b".")
    if major != b"1" or minor in (b"0", b""):
        # §4.2.1: "HTTP/1.1 or higher"; RFC 9110 §2.5: a later 1.x is processed as 1.1.
        return Reject(400, "WebSocket handshakes need HTTP/1.1", close=True)
    if b"upgrade" not in hdr.tokens(h, b"connection"):
        return Reject(400, "missing 'Connection: upgrade'")
    if hdr.tokens(h, b"sec-websocket-version") != [b"13"]:
        # §4.4: tell the client which version we speak.
        return Reject(
            426, "unsupported WebSocket version (this server speaks 13)", (VERSION_HEADER,)
        )
    keys = hdr.values(h, b"sec-websocket-key")
    if len(keys) != 1 or not _valid_key(keys[0].strip()):
        return Reject(400, "Sec-WebSocket-Key must be 16 bytes of base64")
    hosts = hdr.values(h, b"host")
    if len(hosts) != 1 or not valid_host(hosts[0]):
        return Reject(400, "invalid Host header", close=True)
    origins = hdr.values(h, b"origin")
    if len(origins) > 1:
        return Reject(400, "more than one Origin header")
    if hdr.values(h, b"transfer-encoding") or any(
        v.strip() != b"0" for v in hdr.values(h, b"content-length")
    ):
        # A body would sit between the handshake and the first frame: ambiguous, refuse.
        return Reject(400, "a WebSocket handshake must not have a body", close=True)
    protocols = hdr.tokens(h, b"sec-websocket-protocol")
    if not all(_TOKEN.fullmatch(p) for p in protocols):
        return Reject(400, "invalid Sec-WebSocket-Protocol")
    # Subprotocol names are case-sensitive (§11.3.4), so take them from the raw values.
    raw_protocols = [
        p.strip() for v in hdr.values(h, b"sec-websocket-protocol") for p in v.split(b",")
    ]
    return HandshakeInfo(
        key=keys[0].strip(),
        subprotocols=tuple(hdr.text(p) for p in raw_protocols if p),
        extensions=tuple(hdr.text(v) for v in hdr.values(h, b"sec-websocket-extensions")),
        origin=hdr.text(origins[0]) if origins else None,
        host=hdr.text(hosts[0]),
    )


def choose_subprotocol(offered: tuple[str, ...], supported: tuple[str, ...]) -> str | None:
    """The first of the server's ``supported`` subprotocols that the client offered (§4.2.2).

    Server preference wins, as in websockets; no overlap means no subprotocol (the client
    then decides whether to fail the connection, §4.1 step 6).
    """
    for proto in supported:
        if proto in offered:
            return proto
    return None
