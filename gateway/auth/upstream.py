"""``auth = "upstream"``: ask the legacy site who is connecting (nginx's ``auth_request``).

At each WebSocket upgrade on such a mount, :class:`UpstreamAuthenticator` sends
``GET auth_url`` to the legacy site carrying only the client's ``Cookie`` and
``Authorization`` headers, plus ``Host`` (the auth URL's), ``X-Forwarded-For`` (the client's
address, never the client's own claim) and ``X-Forwarded-Proto``.  The answer decides:

* **2xx** accepts; the principal (``session.principal``) is the user name, a string, taken
  from the response header ``auth_user_header`` (default ``X-User``) or, when that header is
  absent, from the JSON body's ``"user"`` field.  A 2xx that names no user is not understood
  and treated as an auth-service failure (503), so a plugin never sees an accepted session
  without a principal.
* **401 / 403** refuse the handshake with that status.
* anything else, a malformed answer, an unreachable auth service or no complete answer within
  :data:`TIMEOUT` seconds (connect + request + response) → **503**: the client did nothing
  wrong, the server side is failing.

Results (accepts and 401/403 refusals, never failures) are cached per ``(Cookie,
Authorization)`` for ``auth_cache_ttl`` seconds (0: no cache) in a bounded LRU of
:data:`CACHE_ENTRIES` entries keyed by a SHA-256 digest, so large cookies cost 32 bytes of key.
The price of a cache: a logout (or a revoked session) still opens new WebSockets for up to
``auth_cache_ttl`` seconds, and a site that keeps the same session cookie across login sees
its just-logged-in users refused for up to as long.

The HTTP client is the proxy's (:mod:`gateway.proxy.client`: h11, the response head bounded
to 16 KiB, its failures one :class:`~gateway.errors.UpstreamError`), one request per
connection (``Connection: close``), ``http://`` only; the body is read only when the header
is absent, bounded by :data:`MAX_BODY`.  Failures of the auth service are logged at most
:data:`LOG_BURST` times per :data:`LOG_INTERVAL` seconds: every client hits them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import h11
import trio

from gateway.api import UpgradeRequest
from gateway.core.decisions import Reject
from gateway.core.histogram import Histogram
from gateway.core.upstream import AuthURL
from gateway.errors import UpstreamError
from gateway.log import Limited, RateLimit, safe
from gateway.proxy import client

log = logging.getLogger("gateway.auth")

TIMEOUT = 5.0  # seconds for connect + request + response
CACHE_ENTRIES = 10_000
MAX_BODY = 64 * 1024
MAX_USER_CHARS = 256
LOG_BURST = 10
LOG_INTERVAL = 10.0

_failures = Limited(log, {"auth": RateLimit(burst=LOG_BURST, interval=LOG_INTERVAL)})

UNAVAILABLE = Reject(503, "authentication service unavailable")
REFUSALS = {401: Reject(401, "authentication required"), 403: Reject(403, "forbidden")}


class AuthServiceError(Exception):
    """The auth service could not be asked, or its answer was not understood (→ 503)."""


@dataclass(frozen=True)
class Answer:
    """What the auth service said: a status and the user it named (if any)."""

    status: int
    user: str | None


def user_from(headers: list[tuple[bytes, bytes]], body: bytes | None, header: str) -> str | None:
    """The principal named by a 2xx answer: header ``header`` first, else the JSON body's
    ``"user"`` (a non-empty string); ``None`` when neither names one."""
    wanted = header.lower().encode("ascii")
    for name, value in headers:
        if name.lower() == wanted:
            text = value.decode("latin-1").strip()
            return text[:MAX_USER_CHARS] if text else None
    if not body:
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    user = data.get("user") if isinstance(data, dict) else None
    if isinstance(user, str) and user:
        return user[:MAX_USER_CHARS]
    return None


class TTLCache:
    """A bounded LRU of values that expire ``ttl`` seconds after they were stored.

    Time is passed in (``now``), so the cache is tested without a clock.
    """

    def __init__(self, ttl: float, max_entries: int = CACHE_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, tuple[float, Answer]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, now: float) -> Answer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if now >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: bytes, value: Answer, now: float) -> None:
        if self.ttl <= 0:
            return
        self._entries[key] = (now + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def cache_key(request: UpgradeRequest) -> bytes:
    """SHA-256 over the client's ``Cookie`` and ``Authorization`` headers (all values)."""
    digest = hashlib.sha256()
    for name in ("cookie", "authorization"):
        for n, v in request.headers:
            if n == name:
                digest.update(name.encode() + b"\0" + v.encode("latin-1") + b"\0")
        digest.update(b"\1")
    return digest.digest()


def forwarded_headers(
    request: UpgradeRequest, url: AuthURL, proto: str
) -> list[tuple[bytes, bytes]]:
    """The auth request's headers: Host, the client's Cookie/Authorization, X-Forwarded-*."""
    headers = [(b"host", url.host_header.encode("ascii"))]
    headers += [
        (n.encode("ascii"), v.encode("latin-1"))
        for n, v in request.headers
        if n in ("cookie", "authorization")
    ]
    if request.remote is not None:  # the client's address (the forwarded one's, if so)
        headers.append((b"x-forwarded-for", request.remote.host.encode("ascii")))
    headers.append((b"x-forwarded-proto", proto.encode("ascii")))
    headers.append((b"connection", b"close"))
    return headers


async def fetch(
    url: AuthURL, headers: list[tuple[bytes, bytes]], user_header: str, timeout: float = TIMEOUT
) -> Answer:
    """One GET to the auth service; :class:`AuthServiceError` on any transport or parse
    failure.  ``timeout`` bounds the connect and each read; the caller bounds the whole."""
    try:
        upstream = await client.connect(url.upstream, connect_timeout=timeout, read_timeout=timeout)
    except UpstreamError as exc:
        raise AuthServiceError(f"cannot connect: {exc}") from None
    try:
        request = h11.Request(method="GET", target=url.target, headers=headers)
        await upstream.send(request, h11.EndOfMessage())
        response = await _head(upstream)
        if not 200 <= response.status_code < 300:
            return Answer(response.status_code, None)
        user = user_from(list(response.headers), None, user_header)
        if user is None:
            user = user_from([], await _body(upstream), user_header)
        return Answer(response.status_code, user)
    except UpstreamError as exc:
        raise AuthServiceError(str(exc)) from None
    finally:
        await upstream.aclose()


async def _head(upstream: client.UpstreamConnection) -> h11.Response:
    while True:
        event = await upstream.next_event()
        if isinstance(event, h11.Response):
            return event
        if not isinstance(event, h11.InformationalResponse):  # a 1xx: the answer follows
            raise AuthServiceError(f"unexpected {type(event).__name__} instead of a head")


async def _body(upstream: client.UpstreamConnection) -> bytes:
    body = bytearray()
    while True:
        event = await upstream.next_event()
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise AuthServiceError(f"response body over {MAX_BODY} bytes")
        elif isinstance(event, h11.EndOfMessage):
            return bytes(body)
        else:
            raise AuthServiceError(f"unexpected {type(event).__name__} in the body")


class UpstreamAuthenticator:
    """An async authenticator (see :mod:`gateway.auth`) asking ``url`` at each upgrade.

    Returns the user name (``str``) or a :class:`Reject` (401/403 as the service said, 503
    when it failed); never ``None``.
    """

    def __init__(
        self,
        url: AuthURL,
        *,
        user_header: str = "X-User",
        cache_ttl: float = 0.0,
        proto: str = "http",
        timeout: float = TIMEOUT,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.url = url
        self.user_header = user_header
        self.proto = proto
        self.timeout = timeout
        self.cache = TTLCache(cache_ttl)
        self.clock = clock
        # For metrics: verdicts ("accepted", "401", "403", "unavailable"), answers taken from
        # the cache, and how long the auth service took to answer (cache hits excluded).
        self.outcomes: Counter[str] = Counter()
        self.cache_hits = 0
        self.latency = Histogram()

    async def __call__(self, request: UpgradeRequest) -> str | Reject:
        key = cache_key(request)
        answer = self.cache.get(key, self.clock())
        if answer is not None:
            self.cache_hits += 1
        else:
            started = trio.current_time()
            try:
                answer = await self._ask(request)
            except AuthServiceError as exc:
                self.latency.observe(trio.current_time() - started)
                self.outcomes["unavailable"] += 1
                _failures.log(
                    "auth",
                    logging.WARNING,
                    "auth service %s failed for %s: %s",
                    self.url.host_header,
                    request.remote,
                    safe(exc),
                )
                return UNAVAILABLE
            self.latency.observe(trio.current_time() - started)
            self.cache.put(key, answer, self.clock())
        self.outcomes["accepted" if answer.user is not None else str(answer.status)] += 1
        return self._verdict(answer)

    async def _ask(self, request: UpgradeRequest) -> Answer:
        headers = forwarded_headers(request, self.url, self.proto)
        with trio.move_on_after(self.timeout):
            answer = await fetch(self.url, headers, self.user_header, self.timeout)
            if 200 <= answer.status < 300 and answer.user is None:
                raise AuthServiceError(f"{answer.status} without {self.user_header} or a user")
            if not (200 <= answer.status < 300 or answer.status in REFUSALS):
                raise AuthServiceError(f"unexpected status {answer.status}")
            return answer
        raise AuthServiceError(f"no answer within {self.timeout:g} s")

    def _verdict(self, answer: Answer) -> str | Reject:
        if answer.user is not None:
            return answer.user
        return REFUSALS[answer.status]
