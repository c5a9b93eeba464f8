"""gateway.log: no client- or upstream-controlled text can forge a log line; rate limits."""

from __future__ import annotations

import io
import logging
import sys

from hypothesis import given
from hypothesis import strategies as st

from gateway.log import OneLineFormatter, RateLimit, safe

# Every character a Unicode-aware reader (str.splitlines, JavaScript, many log viewers) splits
# lines on, and the C1 controls around NEL.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def test_every_line_break_is_escaped() -> None:
    for ch in LINE_BREAKS:
        out = safe(f"a{ch}2024-01-01 ERROR forged")
        assert len(out.splitlines()) == 1, repr(out)
        assert ch not in out


def test_escapes_name_the_code_point() -> None:
    assert safe("a\nb") == "a\\x0ab"
    assert safe("\x85") == "\\x85"
    assert safe("\x9b31m") == "\\x9b31m"  # C1 CSI: a terminal escape in one byte
    assert safe("\u2028\u2029") == "\\u2028\\u2029"
    assert safe("\u202e") == "\\u202e"  # right-to-left override: reorders what a reader sees
    assert safe("\u200b\ufeff") == "\\u200b\\ufeff"  # zero-width
    assert safe("\udc80") == "\\udc80"  # a lone surrogate would make the stream write fail
    assert safe("\U000e0041") == "\\U000e0041"  # a tag character


def test_printable_text_is_untouched() -> None:
    assert safe("/chat/café ☃ 日本") == "/chat/café ☃ 日本"


def test_backslashes_are_doubled_so_an_escape_is_never_ambiguous() -> None:
    # The client sends the four characters "\x0a": not to be read as an escaped newline.
    assert safe("\\x0a") == "\\\\x0a"
    assert safe("\\x0a") != safe("\n")


def test_long_values_are_cut() -> None:
    assert safe("a" * 500, limit=10) == "a" * 10 + "…"


@given(st.text(alphabet=st.characters(codec=None), max_size=50))
def test_safe_output_is_one_printable_line(text: str) -> None:
    out = safe(text)
    assert out.isprintable()
    assert len(out.splitlines()) <= 1
    out.encode("utf-8")  # no lone surrogate survives


def _fail(message: str) -> None:
    raise ValueError(message)


def test_formatter_escapes_fields_that_skipped_safe() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.test_log.formatter")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("reason %s", "x\u2028ERROR forged\r\nERROR forged")
        try:
            _fail("bad\u2029value")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "\u2028" not in text and "\u2029" not in text and "\r" not in text
    first = text.split("\n")[0]
    assert first == "WARNING reason x\\u2028ERROR forged\\x0d\\x0aERROR forged"
    assert "ValueError: bad\\u2029value" in text
    assert sys.exc_info() == (None, None, None)


def test_rate_limit_counts_what_it_drops() -> None:
    now = [0.0]
    limit = RateLimit(burst=3, interval=60.0, clock=lambda: now[0])
    assert [limit.allow() for _ in range(5)] == [0, 0, 0, None, None]
    now[0] = 59.9
    assert limit.allow() is None
    now[0] = 60.0
    assert limit.allow() == 3  # the next line written says how many were dropped
    assert limit.allow() == 0
