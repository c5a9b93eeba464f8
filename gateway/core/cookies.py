"""HMAC-SHA256 signed session cookies that authenticate WebSocket upgrades.

Threat model: a client forges a cookie (signature check), replays an old one (``max_age``), mints
one dated in the future to outlive ``max_age`` (``leeway``), or probes the comparison timing
(websockets CVE-2021-33880: digests are compared with :func:`hmac.compare_digest`).

Cookie format (every character is an RFC 6265 cookie-octet, so it needs no quoting)::

    v1.<kid>.<base64url(user) unpadded>.<issued-at, integer seconds>.<base64url(sig) unpadded>
    sig = HMAC-SHA256(secret, b"v1.<kid>.<user_b64>.<iat>")

The MAC covers the version and key id as well as the payload, so neither can be swapped without
the secret.  This module is pure: no I/O, no clock, no ``os.environ`` — time and the environment
are passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

VERSION: Final = "v1"
MIN_SECRET_BYTES: Final = 16
MAX_USER_CHARS: Final = 256
_MAX_IAT_DIGITS: Final = 12  # Unix seconds below 10**12: year ~33658, and int() stays cheap
_SIG_BYTES: Final = hashlib.sha256().digest_size
_SIG_B64_CHARS: Final = 43  # unpadded base64 of 32 bytes

# Rejection reasons: fixed strings, safe to log, never carrying attacker-controlled text.
MALFORMED: Final = "malformed"
UNSUPPORTED_VERSION: Final = "unsupported version"
UNKNOWN_KEY: Final = "unknown key"
BAD_SIGNATURE: Final = "bad signature"
EXPIRED: Final = "expired"
FUTURE: Final = "issued in the future"
REASONS: Final = frozenset(
    {MALFORMED, UNSUPPORTED_VERSION, UNKNOWN_KEY, BAD_SIGNATURE, EXPIRED, FUTURE}
)

_VERSION_RE: Final = re.compile(r"v[0-9]{1,3}")
_KID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")
_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]+")
# [0-9], not \d: \d also matches non-ASCII digits such as U+0661, which int() would accept.
_IAT_RE: Final = re.compile(rf"[0-9]{{1,{_MAX_IAT_DIGITS}}}")
# Longest value sign() can produce (256 four-byte characters); anything longer is rejected before
# any decoding or hashing, so a huge header costs O(1) beyond the length check.
_MAX_VALUE_CHARS: Final = (
    len(VERSION) + 32 + (MAX_USER_CHARS * 4 * 4 + 2) // 3 + _MAX_IAT_DIGITS + _SIG_B64_CHARS + 4
)
# Unknown kids still pay for one HMAC so that rejection takes about as long as a real check.
_DUMMY_SECRET: Final = bytes(_SIG_BYTES)
_OWS: Final = " \t"  # RFC 7230 optional whitespace around cookie pairs


def _key_problem(kid: str, secret: bytes) -> str | None:
    """Why (kid, secret) is not a usable key, in words that quote neither of them."""
    if not _KID_RE.fullmatch(kid):
        return "key id must be 1-32 characters of A-Z a-z 0-9 _ -"
    if len(secret) < MIN_SECRET_BYTES:
        return f"secret is {len(secret)} bytes, need at least {MIN_SECRET_BYTES}"
    return None


@dataclass(frozen=True)
class SigningKey:
    """One HMAC key: ``kid`` travels in the cookie, ``secret`` never leaves the process.

    Raises ``ValueError`` if ``kid`` does not match ``[A-Za-z0-9_-]{1,32}`` or ``secret`` is
    shorter than 16 bytes.  The secret is kept out of ``repr()`` so keys can appear in logs.
    """

    kid: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        problem = _key_problem(self.kid, self.secret)
        if problem is not None:
            raise ValueError(f"signing key: {problem}")


@dataclass(frozen=True)
class KeyRing:
    """The keys accepted for verification; ``keys[0]`` signs new cookies.

    Rotation: put the new key first and keep the old one after it until every cookie it signed
    has expired, then drop it.  Raises ``ValueError`` if empty or if two keys share a kid.
    """

    keys: tuple[SigningKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("key ring needs at least one key")
        kids = [key.kid for key in self.keys]
        if len(set(kids)) != len(kids):
            raise ValueError("key ring has two keys with the same key id")

    @property
    def signing_key(self) -> SigningKey:
        """The key :func:`sign` uses."""
        return self.keys[0]

    def find(self, kid: str) -> SigningKey | None:
        """The key named ``kid``, or ``None``.  (Rings are a handful of keys: a scan is fine.)"""
        for key in self.keys:
            if key.kid == kid:
                return key
        return None

    @classmethod
    def parse(cls, value: str) -> KeyRing:
        """Parse the operator's secret string.

        Either one bare secret (kid ``"k0"``; it must contain neither ``:`` nor ``,``) or
        ``kid1:secret1,kid2:secret2`` where the first entry signs.  Whitespace around the whole
        value, around entries and around kids and secrets is ignored.  Secrets are measured in
        UTF-8 bytes and must be at least 16.  ``ValueError`` messages name the entry by position
        and never quote a secret or a kid (a mistyped kid may be part of a secret).
        """
        text = value.strip()
        if not text:
            raise ValueError("key ring is empty; expected SECRET or KID:SECRET[,KID:SECRET...]")
        if ":" not in text and "," not in text:
            secret = _utf8_secret(text, "key ring secret")
            if len(secret) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"key ring secret is {len(secret)} bytes, need at least {MIN_SECRET_BYTES}"
                )
            return cls((SigningKey("k0", secret),))
        keys: list[SigningKey] = []
        first_seen: dict[str, int] = {}
        for index, raw_entry in enumerate(text.split(","), start=1):
            where = f"key ring entry {index}"
            entry = raw_entry.strip()
            if not entry:
                raise ValueError(f"{where} is empty")
            kid, colon, secret_text = entry.partition(":")
            if not colon:
                raise ValueError(f"{where} has no 'kid:' prefix; expected KID:SECRET")
            kid = kid.strip()
            secret = _utf8_secret(secret_text.strip(), where)
            problem = _key_problem(kid, secret)
            if problem is not None:
                raise ValueError(f"{where}: {problem}")
            if kid in first_seen:
                raise ValueError(f"{where} repeats the key id of entry {first_seen[kid]}")
            first_seen[kid] = index
            keys.append(SigningKey(kid, secret))
        return cls(tuple(keys))

    @classmethod
    def from_env(cls, name: str, environ: Mapping[str, str]) -> KeyRing:
        """:meth:`parse` the variable ``name`` of ``environ`` (pass ``os.environ``).

        Raises ``ValueError("environment variable NAME is not set")`` if it is missing or blank,
        and otherwise prefixes :meth:`parse` errors with the variable name.
        """
        raw = environ.get(name)
        if raw is None or not raw.strip():
            raise ValueError(f"environment variable {name} is not set")
        try:
            return cls.parse(raw)
        except ValueError as exc:
            raise ValueError(f"environment variable {name}: {exc}") from None


def _utf8_secret(text: str, where: str) -> bytes:
    # os.environ smuggles undecodable bytes in as lone surrogates; the codec's own error would
    # quote the offending text, so replace it with one that does not.
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where}: secret is not valid UTF-8") from None


@dataclass(frozen=True)
class Principal:
    """An authenticated user, as handed to plugins: who, when the cookie was issued, which key."""

    user: str
    issued_at: float
    kid: str


@dataclass(frozen=True)
class CookieRejected:
    """Why a cookie was refused: one of :data:`REASONS`, never text taken from the cookie."""

    reason: str


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes | None:
    """Strict unpadded base64url: ``None`` on any other alphabet, bad length or a non-canonical
    encoding (nonzero trailing bits), so each byte string has exactly one accepted spelling."""
    # The stdlib decoder silently drops characters outside the alphabet; check them first.
    if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if _b64encode(data) == text else None


def _mac(secret: bytes, kid: str, user_b64: str, iat: str) -> bytes:
    # Callers have checked that every part is ASCII.
    message = f"{VERSION}.{kid}.{user_b64}.{iat}".encode("ascii")
    return hmac.digest(secret, message, "sha256")


def sign(ring: KeyRing, user: str, now: float) -> str:
    """A cookie value naming ``user``, issued at ``floor(now)``, signed by ``ring.keys[0]``.

    The result contains only ``[A-Za-z0-9_.-]``, so it is a valid RFC 6265 cookie-value.
    Raises ``ValueError`` if ``user`` is not 1-256 characters of encodable text (no lone
    surrogates) or ``now`` is not a finite time in ``[0, 10**12)``.
    """
    if not 1 <= len(user) <= MAX_USER_CHARS:
        raise ValueError(f"user must be 1-{MAX_USER_CHARS} characters, got {len(user)}")
    try:
        user_bytes = user.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("user is not encodable as UTF-8 (lone surrogate)") from None
    if not (math.isfinite(now) and 0 <= now < 10**_MAX_IAT_DIGITS):
        raise ValueError("now must be a finite Unix time in [0, 10**12)")
    key = ring.signing_key
    user_b64 = _b64encode(user_bytes)
    iat = str(int(now))
    sig = _mac(key.secret, key.kid, user_b64, iat)
    return f"{VERSION}.{key.kid}.{user_b64}.{iat}.{_b64encode(sig)}"


def verify(
    ring: KeyRing, value: str, now: float, max_age: float, leeway: float = 60.0
) -> Principal | CookieRejected:
    """Check a cookie value made by :func:`sign`; return who it names or why it is refused.

    Accepted iff: it has the v1 shape with ASCII-digit ``iat`` (at most 12 digits) and strict
    base64url parts; its kid is in ``ring``; its HMAC matches (constant-time compare of the raw
    digests); the user decodes as 1-256 characters of UTF-8; ``now - iat <= max_age`` (so an age
    of exactly ``max_age`` passes); and ``iat - now <= leeway`` (clock skew allowance).

    Never raises because of ``value``.  Raises ``ValueError`` only for a caller bug: ``now``,
    ``max_age`` or ``leeway`` not finite, or ``max_age``/``leeway`` negative.
    """
    if not (math.isfinite(now) and math.isfinite(max_age) and math.isfinite(leeway)):
        raise ValueError("now, max_age and leeway must be finite")
    if max_age < 0 or leeway < 0:
        raise ValueError("max_age and leeway must not be negative")

    # Shape checks depend only on public structure, so rejecting early leaks nothing secret.
    if len(value) > _MAX_VALUE_CHARS or not value.isascii():
        return CookieRejected(MALFORMED)
    parts = value.split(".")
    if len(parts) != 5:
        return CookieRejected(MALFORMED)
    version, kid, user_b64, iat_text, sig_b64 = parts
    if version != VERSION:
        # Only something shaped like a version is worth logging as one.
        known_shape = _VERSION_RE.fullmatch(version) is not None
        return CookieRejected(UNSUPPORTED_VERSION if known_shape else MALFORMED)
    if not (
        _KID_RE.fullmatch(kid) and _B64URL_RE.fullmatch(user_b64) and _IAT_RE.fullmatch(iat_text)
    ):
        return CookieRejected(MALFORMED)
    sig = _b64decode(sig_b64)
    if sig is None or len(sig) != _SIG_BYTES:
        return CookieRejected(MALFORMED)

    # MAC first, every later decision after it: the work done does not depend on which of the
    # remaining checks would fail.
    key = ring.find(kid)
    expected = _mac(key.secret if key is not None else _DUMMY_SECRET, kid, user_b64, iat_text)
    sig_ok = hmac.compare_digest(expected, sig)
    if key is None:
        return CookieRejected(UNKNOWN_KEY)
    if not sig_ok:
        return CookieRejected(BAD_SIGNATURE)

    # Signed by us, yet still checked: a ring shared with another signer must not widen inputs.
    user_bytes = _b64decode(user_b64)
    if user_bytes is None:
        return CookieRejected(MALFORMED)
    try:
        user = user_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return CookieRejected(MALFORMED)
    if not 1 <= len(user) <= MAX_USER_CHARS:
        return CookieRejected(MALFORMED)
    iat = int(iat_text)
    if iat - now > leeway:
        return CookieRejected(FUTURE)
    if now - iat > max_age:
        return CookieRejected(EXPIRED)
    return Principal(user=user, issued_at=float(iat), kid=kid)


def cookie_value(header_values: Sequence[str], name: str) -> str | None:
    """The value of cookie ``name`` across all ``Cookie`` header values, or ``None``.

    RFC 6265 §5.4 syntax: ``name=value`` pairs separated by ``;``, optional whitespace around
    names and values.  Names match exactly (case-sensitive, so ``xsession`` is not
    ``session``).  A value wrapped in double quotes is unwrapped.  The first occurrence wins, in
    header order then pair order.  Malformed pairs (no ``=``, empty name, unbalanced quote) are
    skipped.  Never raises.
    """
    for header in header_values:
        for pair in header.split(";"):
            pair_name, equals, raw_value = pair.partition("=")
            if not equals or pair_name.strip(_OWS) != name or not name:
                continue
            value = raw_value.strip(_OWS)
            if value.startswith('"'):
                if len(value) < 2 or not value.endswith('"'):
                    continue  # unbalanced quote: malformed, try a later occurrence
                value = value[1:-1]
            return value
    return None
