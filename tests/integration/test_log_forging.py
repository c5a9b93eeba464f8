"""Log forging through the real server: a client's close reason full of line breaks, C1
controls and Unicode separators reaches the log as one escaped line (issue 9, item 5)."""

from __future__ import annotations

import logging
import struct

import pytest
import trio

from gateway.log import OneLineFormatter
from tests.support.in_process import Running, wait_until
from tests.support.raw_http import new_key, raw_connection, request, upgrade_headers
from tests.support.timeouts import TIMEOUT
from tests.support.ws_frames import CLOSE, masked_frame

FORGED = "bye\u20282024-01-01T00:00:00 ERROR   gateway.server: pwned\x85\u2029\r\nERROR x\x9b"


async def test_a_close_reason_cannot_forge_log_lines(
    gateway: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    with trio.fail_after(TIMEOUT):
        async with raw_connection(gateway) as client:
            await client.send(request("GET", "/echo", upgrade_headers(new_key())))
            assert (await client.read_response()).status == 101
            reason = FORGED.encode("utf-8")
            await client.send(masked_frame(CLOSE, struct.pack("!H", 1000) + reason))
            opcode, _, _ = await client.read_frame()
            assert opcode == CLOSE

    formatter = OneLineFormatter("%(levelname)s %(name)s: %(message)s")

    def closed_lines() -> list[str]:
        return [
            formatter.format(r)
            for r in caplog.records
            if r.getMessage() == "closed" and getattr(r, "code", None) == 1000
        ]

    await wait_until(lambda: bool(closed_lines()), "the session's closed line")
    (line,) = closed_lines()
    assert line.isprintable(), repr(line)
    assert len(line.splitlines()) == 1
    assert "\\u2028" in line and "\\x85" in line and "\\u2029" in line and "\\x9b" in line
    assert "\\x0d\\x0a" in line
