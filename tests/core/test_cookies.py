"""Signed session cookies: round trip, rotation, tampering, clock checks, parsing, fuzzing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core import cookies
from gateway.core.cookies import (
    CookieRejected,
    KeyRing,
    Principal,
    SigningKey,
    cookie_value,
    sign,
    verify,
)

SECRET_A = "alpha-secret-0123456789"
SECRET_B = "bravo-secret-0123456789"
RING = KeyRing.parse(f"a:{SECRET_A}")
T0 = 1_700_000_000.0
HOUR = 3600.0

# Hypothesis: no example database in the work tree, bounded runs, a deadline that only trips
# on pathological slowness.
FUZZ = settings(max_examples=200, deadline=timedelta(milliseconds=500), database=None)

# RFC 6265 §4.1.1 cookie-octet: %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
COOKIE_OCTETS = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forge(secret: str, kid: str, user_b64: str, iat: str) -> str:
    """A cookie with a *correct* HMAC over arbitrary parts, so that only the check under test
    can reject it (not the signature)."""
    message = f"v1.{kid}.{user_b64}.{iat}".encode()
    sig = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return f"v1.{kid}.{user_b64}.{iat}.{b64(sig)}"


def reason(result: Principal | CookieRejected) -> str:
    assert isinstance(result, CookieRejected), result
    return result.reason


def replace_part(value: str, index: int, new: str) -> str:
    parts = value.split(".")
    parts[index] = new
    return ".".join(parts)


# --- round trip -----------------------------------------------------------------------------


def test_round_trip() -> None:
    value = sign(RING, "alice", T0)
    assert verify(RING, value, now=T0 + 5, max_age=HOUR) == Principal("alice", T0, "a")


def test_format_matches_spec() -> None:
    value = sign(RING, "alice", T0 + 0.9)  # iat is floored to whole seconds
    user_b64 = b64(b"alice")
    expected_sig = hmac.new(
        SECRET_A.encode(), f"v1.a.{user_b64}.1700000000".encode(), hashlib.sha256
    ).digest()
    assert value == f"v1.a.{user_b64}.1700000000.{b64(expected_sig)}"


@FUZZ
@given(user=st.text(min_size=1, max_size=256), now=st.integers(0, 10**12 - 1))
def test_round_trip_any_user(user: str, now: int) -> None:
    value = sign(RING, user, float(now))
    assert COOKIE_OCTETS.fullmatch(value)
    assert verify(RING, value, now=float(now), max_age=0.0, leeway=0.0) == Principal(
        user, float(now), "a"
    )


@pytest.mark.parametrize("user", ["", "x" * 257])
def test_sign_rejects_user_length(user: str) -> None:
    with pytest.raises(ValueError, match="1-256 characters"):
        sign(RING, user, T0)


def test_sign_accepts_longest_user() -> None:
    user = "\U0001f600" * 256  # 4 UTF-8 bytes each: the longest cookie sign() can make
    result = verify(RING, sign(RING, user, T0), now=T0, max_age=HOUR)
    assert isinstance(result, Principal)
    assert result.user == user


def test_sign_rejects_lone_surrogate() -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        sign(RING, "a\ud800", T0)


@pytest.mark.parametrize("now", [-1.0, float("nan"), float("inf"), 1e12])
def test_sign_rejects_bad_time(now: float) -> None:
    with pytest.raises(ValueError, match="now"):
        sign(RING, "alice", now)


# --- rotation -------------------------------------------------------------------------------


def test_rotation_old_key_still_verifies_new_key_signs() -> None:
    old_ring = KeyRing.parse(f"old:{SECRET_A}")
    rotated = KeyRing.parse(f"new:{SECRET_B},old:{SECRET_A}")
    old_cookie = sign(old_ring, "alice", T0)
    assert verify(rotated, old_cookie, now=T0, max_age=HOUR) == Principal("alice", T0, "old")
    new_cookie = sign(rotated, "bob", T0)
    assert new_cookie.startswith("v1.new.")
    assert verify(rotated, new_cookie, now=T0, max_age=HOUR) == Principal("bob", T0, "new")
    # The old-only ring has never heard of "new".
    assert reason(verify(old_ring, new_cookie, now=T0, max_age=HOUR)) == "unknown key"


def test_removed_key_is_unknown() -> None:
    rotated = KeyRing.parse(f"new:{SECRET_B},old:{SECRET_A}")
    retired = KeyRing.parse(f"new:{SECRET_B}")
    old_cookie = sign(KeyRing.parse(f"old:{SECRET_A}"), "alice", T0)
    assert isinstance(verify(rotated, old_cookie, now=T0, max_age=HOUR), Principal)
    assert reason(verify(retired, old_cookie, now=T0, max_age=HOUR)) == "unknown key"


def test_same_kid_other_secret_is_bad_signature() -> None:
    cookie = sign(KeyRing.parse(f"a:{SECRET_B}"), "alice", T0)
    assert reason(verify(RING, cookie, now=T0, max_age=HOUR)) == "bad signature"


# --- tampering ------------------------------------------------------------------------------

TWO = KeyRing.parse(f"a:{SECRET_A},b:{SECRET_B}")
GOOD = sign(TWO, "alice", T0)


def test_good_cookie_verifies_under_two_key_ring() -> None:
    assert verify(TWO, GOOD, now=T0, max_age=HOUR) == Principal("alice", T0, "a")


@pytest.mark.parametrize(
    ("index", "new", "expected"),
    [
        pytest.param(2, b64(b"mallory"), "bad signature", id="user"),
        pytest.param(3, "1700000001", "bad signature", id="iat"),
        pytest.param(3, "170000000", "bad signature", id="iat-truncated"),
        pytest.param(1, "b", "bad signature", id="kid-other-known-key"),
        pytest.param(1, "zz", "unknown key", id="kid-unknown"),
        pytest.param(1, "", "malformed", id="kid-empty"),
        pytest.param(1, "a" * 33, "malformed", id="kid-too-long"),
        pytest.param(1, "a!", "malformed", id="kid-bad-char"),
        pytest.param(4, b64(b"\x00" * 32), "bad signature", id="sig-zero"),
        pytest.param(4, b64(bytes(31)), "malformed", id="sig-short"),
        pytest.param(4, b64(bytes(33)), "malformed", id="sig-long"),
        pytest.param(4, "", "malformed", id="sig-empty"),
        pytest.param(0, "v2", "unsupported version", id="version"),
        pytest.param(0, "v10", "unsupported version", id="version-10"),
        pytest.param(0, "V1", "malformed", id="version-case"),
        pytest.param(0, "v", "malformed", id="version-no-number"),
        pytest.param(2, "", "malformed", id="user-empty"),
        pytest.param(2, "YWxp!GU", "malformed", id="user-bad-base64-char"),
        pytest.param(2, "YWxpY2U=", "malformed", id="user-padded"),
    ],
)
def test_tampered_part(index: int, new: str, expected: str) -> None:
    tampered = replace_part(GOOD, index, new)
    assert tampered != GOOD
    assert reason(verify(TWO, tampered, now=T0, max_age=HOUR)) == expected


def test_flipped_signature_character() -> None:
    sig = GOOD.split(".")[4]
    flipped = ("B" if sig[0] == "A" else "A") + sig[1:]  # first char: stays canonical
    assert reason(verify(TWO, replace_part(GOOD, 4, flipped), now=T0, max_age=HOUR)) == (
        "bad signature"
    )


def test_every_proper_prefix_is_rejected() -> None:
    for end in range(len(GOOD)):
        assert isinstance(verify(TWO, GOOD[:end], now=T0, max_age=HOUR), CookieRejected), end


def test_truncated_signature_is_malformed() -> None:
    assert reason(verify(TWO, GOOD[:-1], now=T0, max_age=HOUR)) == "malformed"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(GOOD + ".", id="trailing-dot"),
        pytest.param("." + GOOD, id="leading-dot"),
        pytest.param(GOOD.replace(".", "..", 1), id="double-dot"),
        pytest.param(GOOD + ".x", id="sixth-part"),
        pytest.param(GOOD.rsplit(".", 1)[0], id="four-parts"),
        pytest.param(" " + GOOD, id="leading-space"),
        pytest.param(GOOD + "\n", id="trailing-newline"),
        pytest.param("", id="empty"),
        pytest.param("....", id="only-dots"),
        pytest.param("v1....", id="v1-then-dots"),
        pytest.param(GOOD + "é", id="non-ascii"),
        pytest.param(GOOD[:-1] + "é", id="non-ascii-in-sig"),
        pytest.param("v1.a." + "A" * 5000 + ".1.x", id="oversized"),
    ],
)
def test_malformed_shape(value: str) -> None:
    assert reason(verify(TWO, value, now=T0, max_age=HOUR)) == "malformed"


@pytest.mark.parametrize(
    "iat",
    [
        pytest.param("\u0661\u0667" + "\u0660" * 8, id="arabic-indic-digits"),  # int() takes these
        pytest.param("+1700000000", id="plus-sign"),
        pytest.param("-1", id="negative"),
        pytest.param("1700000000 ", id="trailing-space"),
        pytest.param("1_700_000_000", id="underscores"),  # int() would accept these too
        pytest.param("1e9", id="exponent"),
        pytest.param("1700000000.5", id="fraction"),  # extra part, but signed as one
        pytest.param("1" * 13, id="thirteen-digits"),
        pytest.param("", id="empty"),
    ],
)
def test_non_digit_iat_is_malformed_even_when_signed(iat: str) -> None:
    cookie = forge(SECRET_A, "a", b64(b"alice"), iat)
    assert reason(verify(RING, cookie, now=T0, max_age=HOUR)) == "malformed"


def test_twelve_digit_iat_is_accepted_when_signed() -> None:
    now = float(10**12 - 1)
    cookie = forge(SECRET_A, "a", b64(b"alice"), str(10**12 - 1))
    assert verify(RING, cookie, now=now, max_age=HOUR) == Principal("alice", now, "a")


@pytest.mark.parametrize(
    "user_b64",
    [
        pytest.param(b64(b"\xff\xfe"), id="invalid-utf8"),
        pytest.param(b64("a\ud800".encode("utf-8", "surrogatepass")), id="encoded-surrogate"),
        pytest.param(b64(b"x" * 257), id="too-long"),
        pytest.param("YR", id="non-canonical-trailing-bits"),  # "YQ" is the canonical "a"
        pytest.param("YWxpY", id="length-mod-4-is-1"),
    ],
)
def test_bad_user_is_malformed_even_when_signed(user_b64: str) -> None:
    cookie = forge(SECRET_A, "a", user_b64, "1700000000")
    assert reason(verify(RING, cookie, now=T0, max_age=HOUR)) == "malformed"


def test_non_canonical_signature_encoding_is_malformed() -> None:
    sig = GOOD.split(".")[4]
    # 43 chars carry 258 bits for 256: the last char's low 2 bits must be zero.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])
    assert last & 3 == 0
    variant = sig[:-1] + alphabet[last | 1]
    assert base64.urlsafe_b64decode(variant + "=") == base64.urlsafe_b64decode(sig + "=")
    assert reason(verify(TWO, replace_part(GOOD, 4, variant), now=T0, max_age=HOUR)) == (
        "malformed"
    )


def test_signature_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    tampered = replace_part(GOOD, 2, b64(b"mallory"))
    assert reason(verify(TWO, tampered, now=T0, max_age=HOUR)) == "bad signature"
    assert len(calls) == 1
    a, b = calls[0]
    assert isinstance(a, bytes)
    assert isinstance(b, bytes)  # raw digests, not their base64 text
    assert len(a) == len(b) == 32


def test_oversized_value_costs_no_hmac(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = hmac.digest

    def spy(key: bytes, msg: bytes, digest: str) -> bytes:
        calls.append(msg)
        return real(key, msg, digest)

    monkeypatch.setattr(hmac, "digest", spy)
    assert isinstance(verify(TWO, GOOD, now=T0, max_age=HOUR), Principal)
    assert len(calls) == 1  # the spy does see the normal path
    huge = forge(SECRET_A, "a", b64(b"x" * 100_000), "1700000000")
    assert reason(verify(TWO, huge, now=T0, max_age=HOUR)) == "malformed"
    assert len(calls) == 1


def test_signature_checked_before_clock() -> None:
    forged = replace_part(sign(RING, "alice", T0), 2, b64(b"mallory"))
    assert reason(verify(RING, forged, now=T0 + 10 * HOUR, max_age=HOUR)) == "bad signature"
    assert reason(verify(RING, forged, now=T0 - 10 * HOUR, max_age=HOUR)) == "bad signature"


# --- clock ----------------------------------------------------------------------------------


def test_expiry_boundary() -> None:
    cookie = sign(RING, "alice", T0)
    assert isinstance(verify(RING, cookie, now=T0 + HOUR, max_age=HOUR), Principal)
    assert reason(verify(RING, cookie, now=T0 + HOUR + 1, max_age=HOUR)) == "expired"
    assert reason(verify(RING, cookie, now=T0 + HOUR + 0.001, max_age=HOUR)) == "expired"


def test_max_age_zero_accepts_only_the_issuing_second() -> None:
    cookie = sign(RING, "alice", T0)
    assert isinstance(verify(RING, cookie, now=T0, max_age=0.0), Principal)
    assert reason(verify(RING, cookie, now=T0 + 1, max_age=0.0)) == "expired"


def test_future_iat_within_and_beyond_leeway() -> None:
    cookie = sign(RING, "alice", T0)
    assert isinstance(verify(RING, cookie, now=T0 - 60, max_age=HOUR), Principal)
    assert reason(verify(RING, cookie, now=T0 - 61, max_age=HOUR)) == "issued in the future"
    assert reason(verify(RING, cookie, now=T0 - 1, max_age=HOUR, leeway=0.0)) == (
        "issued in the future"
    )
    assert isinstance(verify(RING, cookie, now=T0 - 500, max_age=HOUR, leeway=500.0), Principal)


@pytest.mark.parametrize(
    ("now", "max_age", "leeway"),
    [
        (float("nan"), HOUR, 60.0),
        (T0, float("nan"), 60.0),
        (T0, HOUR, float("nan")),
        (T0, float("inf"), 60.0),
        (T0, -1.0, 60.0),
        (T0, HOUR, -1.0),
    ],
)
def test_verify_rejects_caller_bugs(now: float, max_age: float, leeway: float) -> None:
    with pytest.raises(ValueError, match=r"max_age|leeway|finite"):
        verify(RING, sign(RING, "alice", T0), now=now, max_age=max_age, leeway=leeway)


# --- never raises ---------------------------------------------------------------------------


def assert_rejected_cleanly(value: str) -> None:
    result = verify(TWO, value, now=T0, max_age=HOUR)
    assert isinstance(result, CookieRejected | Principal)
    if isinstance(result, CookieRejected):
        assert result.reason in cookies.REASONS


@FUZZ
@given(st.text())
def test_verify_never_raises_on_text(value: str) -> None:
    assert_rejected_cleanly(value)


@FUZZ
@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_verify_never_raises_on_ascii(value: str) -> None:
    assert_rejected_cleanly(value)


@FUZZ
@given(
    parts=st.lists(
        st.text(alphabet="v1abAQYR_-=.0123456789+/ \x00é", max_size=50), min_size=1, max_size=7
    )
)
def test_verify_never_raises_on_near_cookies(parts: list[str]) -> None:
    # Dot-joined fragments drawn from the cookie alphabet reach the deeper checks.
    assert_rejected_cleanly(".".join(parts))


@FUZZ
@given(index=st.integers(0, len(GOOD) - 1), char=st.characters())
def test_any_single_character_change_is_rejected(index: int, char: str) -> None:
    tampered = GOOD[:index] + char + GOOD[index + 1 :]
    result = verify(TWO, tampered, now=T0, max_age=HOUR)
    if tampered == GOOD:
        assert isinstance(result, Principal)
    else:
        assert isinstance(result, CookieRejected)
        assert result.reason in cookies.REASONS


# --- KeyRing.parse / from_env ---------------------------------------------------------------


def test_parse_bare_secret() -> None:
    ring = KeyRing.parse(f"  {SECRET_A}\n")
    assert ring.keys == (SigningKey("k0", SECRET_A.encode()),)


def test_parse_list_first_signs() -> None:
    ring = KeyRing.parse(f"new:{SECRET_B}, old : {SECRET_A} ")
    assert ring.keys == (
        SigningKey("new", SECRET_B.encode()),
        SigningKey("old", SECRET_A.encode()),
    )
    assert ring.signing_key.kid == "new"


def test_parse_secret_may_contain_colon_in_list_form() -> None:
    ring = KeyRing.parse("k:abc:defghijklmnopq")
    assert ring.keys == (SigningKey("k", b"abc:defghijklmnopq"),)


def test_parse_counts_utf8_bytes() -> None:
    assert KeyRing.parse("é" * 8).keys[0].secret == ("é" * 8).encode()  # 8 chars, 16 bytes
    with pytest.raises(ValueError, match="15 bytes"):
        KeyRing.parse("é" * 7 + "a")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("shortsecret1234", "key ring secret is 15 bytes", id="short-bare"),
        pytest.param(f"a:{SECRET_A},b:shortsecret1234", "entry 2: secret is 15 bytes", id="short"),
        pytest.param("a:", "entry 1: secret is 0 bytes", id="empty-secret"),
        pytest.param("bad kid!:shortsecret1234", "entry 1: key id must", id="bad-kid"),
        pytest.param("x" * 33 + ":shortsecret1234", "entry 1: key id must", id="long-kid"),
        pytest.param(":shortsecret1234xx", "entry 1: key id must", id="empty-kid"),
        pytest.param("", "empty", id="empty"),
        pytest.param("   \t", "empty", id="blank"),
        pytest.param(f"a:{SECRET_A},", "entry 2 is empty", id="trailing-comma"),
        pytest.param(f"a:{SECRET_A},,b:{SECRET_B}", "entry 2 is empty", id="double-comma"),
        pytest.param(f"a:{SECRET_A},shortsecret1234", "entry 2 has no 'kid:'", id="no-kid"),
        pytest.param("shortsecret1234,another1234", "entry 1 has no 'kid:'", id="comma-bare"),
        pytest.param(f"a:{SECRET_A},a:shortsecret1234xx", "repeats the key id", id="dup-kid"),
        pytest.param("a:shortsecret\udcff1234", "not valid UTF-8", id="surrogate"),
    ],
)
def test_parse_errors_do_not_echo_secrets(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        KeyRing.parse(value)
    text = str(info.value)
    for secret in ("shortsecret", "1234", SECRET_A, SECRET_B, "another", "bad kid", "xxxx"):
        assert secret not in text
    assert info.value.__cause__ is None
    # Raised "from None": a chained codec error would carry the secret text in its .object.
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_from_env() -> None:
    ring = KeyRing.from_env("GW_KEYS", {"GW_KEYS": f"a:{SECRET_A}"})
    assert ring == RING


@pytest.mark.parametrize("environ", [{}, {"GW_KEYS": ""}, {"GW_KEYS": "  "}, {"OTHER": SECRET_A}])
def test_from_env_missing(environ: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"^environment variable GW_KEYS is not set$"):
        KeyRing.from_env("GW_KEYS", environ)


def test_from_env_names_variable_not_secret() -> None:
    with pytest.raises(ValueError, match=r"^environment variable GW_KEYS: .*15 bytes") as info:
        KeyRing.from_env("GW_KEYS", {"GW_KEYS": "shortsecret1234"})
    assert "shortsecret" not in str(info.value)


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        SigningKey("a", b"short")
    with pytest.raises(ValueError, match="key id"):
        SigningKey("a b", b"x" * 16)
    with pytest.raises(ValueError, match="at least one key"):
        KeyRing(())
    with pytest.raises(ValueError, match="same key id"):
        KeyRing((SigningKey("a", b"x" * 16), SigningKey("a", b"y" * 16)))


def test_repr_hides_secret() -> None:
    assert SECRET_A not in repr(RING)
    assert "alpha" not in repr(SigningKey("a", SECRET_A.encode()))


# --- cookie_value ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(["session=abc"], "abc", id="single"),
        pytest.param(["a=1; session=abc; b=2"], "abc", id="middle"),
        pytest.param(["a=1;session=abc"], "abc", id="no-space"),
        pytest.param(["a=1 ;  session  =  abc  ; b=2"], "abc", id="whitespace"),
        pytest.param(["a=1;\tsession=abc\t"], "abc", id="tabs"),
        pytest.param(["\u00a0session=evil; session=good"], "good", id="nbsp-is-not-ows"),
        pytest.param(["session=abc\x0b"], "abc\x0b", id="only-sp-htab-stripped"),
        pytest.param(['session="abc"'], "abc", id="quoted"),
        pytest.param(['session=""'], "", id="quoted-empty"),
        pytest.param(["session="], "", id="empty-value"),
        pytest.param(["session=a=b=="], "a=b==", id="equals-in-value"),
        pytest.param(["session=first; session=second"], "first", id="first-in-header"),
        pytest.param(["a=1", "session=first", "session=second"], "first", id="first-header"),
        pytest.param(["xsession=evil; session=good"], "good", id="prefix-before"),
        pytest.param(["session_id=evil; sessionx=evil; session=good"], "good", id="suffixes"),
        pytest.param(["xsession=evil"], None, id="only-prefixed"),
        pytest.param(["sessionid=evil"], None, id="only-suffixed"),
        pytest.param(["Session=evil"], None, id="case-sensitive"),
        pytest.param(["a=1; b=2"], None, id="missing"),
        pytest.param([], None, id="no-headers"),
        pytest.param([""], None, id="empty-header"),
        pytest.param(["session; session=abc"], "abc", id="pair-without-equals-skipped"),
        pytest.param(['session="abc; session=def'], "def", id="unbalanced-quote-skipped"),
        pytest.param(['session="; session=def'], "def", id="lone-quote-skipped"),
        pytest.param([";;; =x; session=abc;"], "abc", id="junk-skipped"),
        pytest.param(["a=1", "b=2; session=abc"], "abc", id="second-header"),
    ],
)
def test_cookie_value(headers: list[str], expected: str | None) -> None:
    assert cookie_value(headers, "session") == expected


def test_cookie_value_empty_name_matches_nothing() -> None:
    assert cookie_value(["=abc; session=x"], "") is None


def test_cookie_value_feeds_verify() -> None:
    cookie = sign(RING, "alice", T0)
    value = cookie_value([f"theme=dark; session={cookie}"], "session")
    assert value is not None
    assert verify(RING, value, now=T0, max_age=HOUR) == Principal("alice", T0, "a")


@FUZZ
@given(headers=st.lists(st.text(max_size=80), max_size=4), name=st.text(max_size=10))
def test_cookie_value_never_raises(headers: list[str], name: str) -> None:
    result = cookie_value(headers, name)
    assert result is None or any(result in header for header in headers)


@FUZZ
@given(
    before=st.lists(
        st.tuples(
            st.from_regex(r"[a-z]{1,8}", fullmatch=True),
            st.from_regex(r"[a-z0-9]*", fullmatch=True),
        ),
        max_size=3,
    ),
    value=st.from_regex(COOKIE_OCTETS, fullmatch=True),  # no DQUOTE, ";" or whitespace
)
def test_cookie_value_finds_value_among_others(before: list[tuple[str, str]], value: str) -> None:
    pairs = [f"{n}={v}" for n, v in before if n != "session"]
    header = "; ".join([*pairs, f"session={value}", "session=later"])
    assert cookie_value([header], "session") == value
