"""Reading a client's request body (gateway/proxy/body.py) over an in-memory stream pair:
every outcome of :func:`read_whole` and :class:`ClientBody`, with trio's virtual clock for
the deadlines."""

from __future__ import annotations

import os
from pathlib import Path

import h11
import pytest
import trio
import trio.testing

from gateway.proxy.body import BufferedBody, ClientBody, ClientGone, Refused, read_whole

MiB = 1024 * 1024


async def body_of(
    raw: bytes,
    *,
    then_close: bool = True,
    max_size: int = MiB,
    memory_limit: int = 1024,
    temp_dir: str | None = None,
    read_timeout: float = 10.0,
    deadline: float = float("inf"),
) -> BufferedBody:
    """Feed ``raw`` (a request head and body) to an h11 server connection and read the body."""
    client, server = trio.testing.memory_stream_pair()
    conn = h11.Connection(h11.SERVER)
    await client.send_all(raw)
    if then_close:
        await client.send_eof()
    conn.receive_data(bytes(await server.receive_some(65536)))
    assert isinstance(conn.next_event(), h11.Request)
    body = ClientBody(server, conn, read_timeout=read_timeout, deadline=deadline)
    return await read_whole(body, max_size=max_size, memory_limit=memory_limit, temp_dir=temp_dir)


def post(body: bytes, *, chunked: bool = False) -> bytes:
    if chunked:
        framed = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
        return b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + framed
    return b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def collected(buffered: BufferedBody) -> bytes:
    return b"".join([piece async for piece in buffered.chunks()])


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_small_body_stays_in_memory(chunked: bool) -> None:
    buffered = await body_of(post(b"hello", chunked=chunked))
    assert (buffered.file, bytes(buffered.memory), buffered.size) == (None, b"hello", 5)
    assert await collected(buffered) == b"hello"


async def test_a_body_past_the_memory_limit_spools_to_an_unlinked_file(tmp_path: Path) -> None:
    data = os.urandom(5000)
    buffered = await body_of(post(data), memory_limit=1000, temp_dir=str(tmp_path))
    try:
        assert buffered.file is not None and buffered.memory == b""
        assert os.listdir(tmp_path) == []  # unlinked at creation
        assert buffered.size == 5000
        assert await collected(buffered) == data
        assert await collected(buffered) == data  # read again from the start (a retry)
    finally:
        await buffered.aclose()
    assert buffered.file is None


async def test_the_size_limit_counts_every_byte() -> None:
    assert (await body_of(post(b"x" * 100), max_size=100)).size == 100
    with pytest.raises(Refused) as info:
        await body_of(post(b"x" * 101, chunked=True), max_size=100)
    assert info.value.reject.status == 413


async def test_a_malformed_chunked_body_is_400() -> None:
    raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX"
    with pytest.raises(Refused) as info:
        await body_of(raw)
    assert info.value.reject.status == 400


async def test_a_client_leaving_mid_body_is_gone() -> None:
    with pytest.raises(ClientGone):
        await body_of(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")


async def test_silence_past_read_timeout_is_408(autojump_clock: trio.testing.MockClock) -> None:
    raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"
    start = trio.current_time()
    with pytest.raises(Refused) as info:
        await body_of(raw, then_close=False, read_timeout=3.0)
    assert info.value.reject.status == 408
    assert trio.current_time() - start == pytest.approx(3.0)


async def test_the_whole_body_deadline_is_408_even_while_bytes_keep_coming(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    conn = h11.Connection(h11.SERVER)
    await client.send_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
    conn.receive_data(bytes(await server.receive_some(65536)))
    assert isinstance(conn.next_event(), h11.Request)
    start = trio.current_time()
    body = ClientBody(server, conn, read_timeout=5.0, deadline=start + 2.5)

    async def drip() -> None:
        for _ in range(1000):
            await trio.sleep(1.0)  # always within read_timeout
            await client.send_all(b"x")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drip)
        with pytest.raises(Refused) as info:
            await read_whole(body, max_size=MiB, memory_limit=MiB, temp_dir=None)
        nursery.cancel_scope.cancel()
    assert info.value.reject.status == 408
    assert trio.current_time() - start == pytest.approx(2.5)


async def test_a_spool_that_cannot_be_created_is_an_oserror_for_the_caller(
    tmp_path: Path,
) -> None:
    missing = str(tmp_path / "gone")
    with pytest.raises(FileNotFoundError):
        await body_of(post(b"x" * 5000), memory_limit=100, temp_dir=missing)
