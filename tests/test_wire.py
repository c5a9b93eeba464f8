"""gateway.wire: direct reads and writes on a real socket pair, the stream fallback, and the
heads of the gateway's own answers."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from gateway.wire import Wire, fields, response_head


async def socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


async def test_receive_now_says_nothing_yet_then_data_then_end() -> None:
    ours, theirs = await socket_pair()
    wire = Wire(ours)
    assert wire.fd == ours.socket.fileno()
    assert wire.receive_now(100) is None  # nothing there: no wait, no exception
    await theirs.send_all(b"hello")
    await trio.testing.wait_all_tasks_blocked()
    assert wire.receive_now(100) == b"hello"
    await theirs.aclose()
    assert wire.receive_now(100) == b""
    assert await wire.receive(100) == b""
    await ours.aclose()


async def test_receive_waits_for_bytes() -> None:
    ours, theirs = await socket_pair()
    wire = Wire(ours)
    async with trio.open_nursery() as nursery:

        async def later() -> None:
            await trio.sleep(0.01)
            await theirs.send_all(b"late")

        nursery.start_soon(later)
        with trio.fail_after(5):
            assert await wire.receive(100) == b"late"
    await ours.aclose()
    await theirs.aclose()


async def test_a_send_larger_than_the_kernel_takes_is_finished_through_the_stream() -> None:
    ours, theirs = await socket_pair()
    wire = Wire(ours)
    data = bytes(range(256)) * 40_000  # ~10 MB: more than any socket buffer
    got = bytearray()

    async def read_all() -> None:
        while len(got) < len(data):
            got.extend(await theirs.receive_some(1 << 20))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await wire.send(data)
    assert bytes(got) == data
    await ours.aclose()
    await theirs.aclose()


async def test_a_closed_stream_is_never_read_or_written_by_its_old_descriptor() -> None:
    # After close the number may belong to another socket: the wire must not touch it.
    ours, theirs = await socket_pair()
    wire = Wire(ours)
    await ours.aclose()
    other, other_peer = await socket_pair()  # may reuse the closed descriptor's number
    await other_peer.send_all(b"not yours")
    await trio.testing.wait_all_tasks_blocked()
    assert wire.receive_now(100) == b""
    with pytest.raises(trio.BrokenResourceError):
        await wire.send(b"x")
    assert await other.receive_some(100) == b"not yours"
    for s in (theirs, other, other_peer):
        await s.aclose()


async def test_a_write_to_a_reset_peer_is_broken_resource() -> None:
    ours, theirs = await socket_pair()
    await theirs.aclose()
    wire = Wire(ours)

    async def flood() -> None:
        for _ in range(100):  # the first writes may still be accepted by the kernel
            await wire.send(b"x" * 65536)

    with pytest.raises(trio.BrokenResourceError):
        await flood()
    await ours.aclose()


async def test_streams_other_than_plain_tcp_go_through_the_stream() -> None:
    left, right = trio.testing.memory_stream_pair()
    wire = Wire(left)
    assert wire.fd == -1
    assert wire.receive_now(10) is None
    assert wire.send_now(b"x") == 0
    await wire.send(b"abc")
    assert await right.receive_some(10) == b"abc"
    await right.send_all(b"def")
    assert await wire.receive(10) == b"def"
    await right.aclose()
    assert await wire.receive(10) == b""


def test_response_head() -> None:
    head = response_head(200, [(b"content-length", b"3"), (b"x-a", b"b c")])
    assert head == b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-a: b c\r\n\r\n"
    assert response_head(599, []) == b"HTTP/1.1 599 \r\n\r\n"


@pytest.mark.parametrize(
    "field",
    [
        (b"x", b"a\r\nInjected: yes"),
        (b"x", b"a\nb"),
        (b"x", b"a\0b"),
        (b"x y", b"a"),
        (b"x:", b"a"),
        (b"", b"a"),
        (b"x\r\n", b"a"),
    ],
)
def test_response_head_refuses_fields_that_could_split_the_head(field: tuple[bytes, bytes]) -> None:
    with pytest.raises(ValueError, match="unsendable"):
        response_head(200, [field])


def test_fields_are_h11s_lowercase_pairs() -> None:
    import h11

    event = h11.Request(method="GET", target="/", headers=[("Host", "a"), ("X-Thing", "B")])
    assert fields(event.headers) == [(b"host", b"a"), (b"x-thing", b"B")] == list(event.headers)
