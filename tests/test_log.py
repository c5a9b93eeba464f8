"""gateway.log: no client- or upstream-controlled text can forge a log line; rate limits."""

from __future__ import annotations

import io
import logging
import sys

import pytest
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


# --------------------------------------------------------------------------- formats


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("gateway.session", logging.INFO, __file__, 1, msg, (), None)
    record.__dict__.update(extra)
    return record


def test_json_line_has_ts_level_logger_event_and_the_fields() -> None:
    import json

    from gateway.log import JsonLineFormatter

    record = _record("closed", mount="echo", session="ab12", code=1000, reason="", user=None)
    record.created = 1_700_000_000.1234
    out = JsonLineFormatter().format(record)
    assert "\n" not in out
    data = json.loads(out)
    assert data["ts"] == "2023-11-14T22:13:20.123Z"
    assert (data["level"], data["logger"], data["event"]) == ("INFO", "gateway.session", "closed")
    assert (data["mount"], data["session"], data["code"], data["reason"]) == (
        "echo",
        "ab12",
        1000,
        "",
    )
    assert "user" not in data  # None fields are left out


def test_json_lines_cannot_be_forged() -> None:
    import json

    from gateway.log import JsonLineFormatter

    out = JsonLineFormatter().format(_record("bye\u2028\n{x", reason="a\u2029\r\nb"))
    assert len(out.splitlines()) == 1 and out.isascii()
    data = json.loads(out)
    assert data["event"] == "bye\\u2028\\x0a{x"  # escaped as in the text format
    assert data["reason"] == "a\u2029\r\nb"  # JSON's own escapes carry it intact


def test_text_line_has_the_prefix_and_the_fields() -> None:
    formatter = OneLineFormatter("%(message)s")
    record = _record("closed", mount="echo", session="ab12", code=1001, reason="going away")
    assert formatter.format(record) == '[echo ab12] closed code=1001 reason="going away"'
    record = _record("refused handshake", mount="chat", status=403, origin="https://x.test")
    assert formatter.format(record) == (
        "refused handshake mount=chat status=403 origin=https://x.test"
    )
    worker = _record("listening", worker=2)
    assert formatter.format(worker).startswith("[worker 2 pid ")


def test_log_levels_in_any_case() -> None:
    from gateway.log import parse_level

    assert parse_level("debug") == "DEBUG"
    assert parse_level("Warn") == "WARNING"
    with pytest.raises(ValueError, match="loud"):
        parse_level("loud")


def test_limited_lines_are_limited_per_kind() -> None:
    from gateway.log import Limited

    now = [0.0]
    logger = logging.getLogger("tests.limited")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        lines = Limited(
            logger,
            {
                "a": RateLimit(2, 10.0, clock=lambda: now[0]),
                "b": RateLimit(1, 10.0, clock=lambda: now[0]),
            },
        )
        written = [lines.log("a", logging.INFO, "a%d", i) for i in range(5)]
        assert written == [True, True, False, False, False]
        assert lines.log("b", logging.INFO, "b")  # a flood of "a" never silences "b"
        now[0] = 11.0
        assert lines.log("a", logging.INFO, "a again")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["a0", "a1", "b", "a again"]
    assert getattr(records[-1], "dropped", None) == 3


def test_the_text_formats_time_follows_each_records_second() -> None:
    """The time prefix is formatted once a second: records in the same second share it, the
    next second gets its own (never a stale one)."""
    formatter = OneLineFormatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S")

    def at(created: float) -> str:
        record = logging.LogRecord("t", logging.INFO, "", 0, "m", None, None)
        record.created = created
        return formatter.format(record)

    base = 1_700_000_000.0
    first, same, later = at(base + 0.1), at(base + 0.9), at(base + 1.0)
    assert first == same == formatter.formatTime(_created_at(base), "%Y-%m-%dT%H:%M:%S") + " m"
    assert later != first and later.endswith(" m")
    assert at(base + 0.5) == first  # back to an earlier second: formatted again, correctly


def test_the_default_time_format_keeps_each_records_milliseconds() -> None:
    """Without a ``datefmt`` the time has milliseconds (logging's default): two records in
    the same second must not share the first one's."""
    formatter = OneLineFormatter("%(asctime)s %(message)s")
    base = 1_700_000_000.0
    first, later = _created_at(base + 0.1), _created_at(base + 0.9)
    first.msecs, later.msecs = 100.0, 900.0  # as LogRecord sets them from `created`
    assert formatter.format(first).split(" ")[1].endswith(",100")
    assert formatter.format(later).split(" ")[1].endswith(",900")


def _created_at(created: float) -> logging.LogRecord:
    record = logging.LogRecord("t", logging.INFO, "", 0, "m", None, None)
    record.created = created
    return record


def test_numbers_and_text_fields_are_written_as_key_value_pairs() -> None:
    formatter = OneLineFormatter("%(message)s")
    record = _created_at(0.0)
    record.__dict__.update(code=1000, duration_ms=1.5, reason="going away", path="/a=b", user="")
    assert formatter.format(record) == (
        'm user="" path="/a=b" code=1000 reason="going away" duration_ms=1.5'
    )
