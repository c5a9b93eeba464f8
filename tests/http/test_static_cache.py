"""gateway.http.static.StaticCache and send_file: a hit costs no lookup, a stale entry is
looked at again (changes, deletions, symlink swaps seen), the bounds hold; sendfile sends the
file's bytes and stops short when the file shrank."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from gateway.http.static import StaticCache, send_file


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "a.txt").write_bytes(b"first\n")
    (tmp_path / "big.bin").write_bytes(b"b" * 100_000)
    return tmp_path


def cache(root: Path, clock: Clock, **kw: int) -> StaticCache:
    return StaticCache(root, "index.html", clock=clock, **kw)


async def test_a_fresh_entry_needs_no_lookup(site: Path) -> None:
    clock = Clock()
    c = cache(site, clock)
    first = await c.open("/a.txt", b"GET", [])
    assert first is not None and first.body == b"first\n" and first.status == 200
    clock.now += 0.5
    again = await c.open("/a.txt", b"GET", [])
    assert again is not None and again.body == b"first\n"
    assert c.lookups == 1


async def test_a_changed_file_is_seen_after_a_second(site: Path) -> None:
    clock = Clock()
    c = cache(site, clock)
    first = await c.open("/a.txt", b"GET", [])
    assert first is not None
    (site / "a.txt").write_bytes(b"second, longer\n")
    clock.now += 0.5
    stale = await c.open("/a.txt", b"GET", [])
    assert stale is not None and stale.body == b"first\n"  # within the second: as before
    clock.now += 0.6
    fresh = await c.open("/a.txt", b"GET", [])
    assert fresh is not None and fresh.body == b"second, longer\n"
    assert dict(fresh.headers)[b"etag"] != dict(first.headers)[b"etag"]
    assert c.lookups == 2


async def test_an_unchanged_file_is_not_read_again(site: Path) -> None:
    clock = Clock()
    c = cache(site, clock)
    first = await c.open("/a.txt", b"GET", [])
    clock.now += 2
    again = await c.open("/a.txt", b"GET", [])
    assert first is not None and again is not None
    assert again.body is first.body  # the same bytes object: stat said unchanged


async def test_deleted_files_and_swapped_symlinks_are_seen(
    site: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret").write_bytes(b"no")
    (site / "inner.txt").write_bytes(b"yes")
    os.symlink(site / "inner.txt", site / "link.txt")
    clock = Clock()
    c = cache(site, clock)
    assert (await c.open("/link.txt", b"GET", [])) is not None
    os.remove(site / "link.txt")
    os.symlink(outside / "secret", site / "link.txt")  # now points outside the root
    os.remove(site / "a.txt")
    clock.now += 1
    assert await c.open("/link.txt", b"GET", []) is None
    assert await c.open("/a.txt", b"GET", []) is None


async def test_a_miss_is_remembered_for_a_second_too(site: Path) -> None:
    clock = Clock()
    c = cache(site, clock)
    assert await c.open("/new.txt", b"GET", []) is None
    (site / "new.txt").write_bytes(b"new")
    assert await c.open("/new.txt", b"GET", []) is None
    clock.now += 1
    found = await c.open("/new.txt", b"GET", [])
    assert found is not None and found.body == b"new"


async def test_large_files_are_not_kept_in_memory(site: Path) -> None:
    c = cache(site, Clock(), small_file=65536)
    found = await c.open("/big.bin", b"GET", [])
    assert found is not None and found.body is None and found.size == 100_000
    assert c.bytes == 0


async def test_head_and_304_send_no_body(site: Path) -> None:
    c = cache(site, Clock())
    head = await c.open("/a.txt", b"HEAD", [])
    assert head is not None and not head.send_body
    etag = dict(head.headers)[b"etag"]
    cond = await c.open("/a.txt", b"GET", [(b"if-none-match", etag)])
    assert cond is not None and cond.status == 304 and not cond.send_body


async def test_the_cache_is_bounded_in_paths_and_bytes(site: Path) -> None:
    for i in range(10):
        (site / f"f{i}.txt").write_bytes(b"x" * 1000)
    c = cache(site, Clock(), entries=4, max_bytes=2500)
    for i in range(10):
        assert await c.open(f"/f{i}.txt", b"GET", []) is not None
    for i in range(20):
        assert await c.open(f"/missing-{i}", b"GET", []) is None  # inventing paths only evicts
    assert len(c.entries) == 4
    assert c.bytes <= 2500
    assert c.bytes == sum(len(e.body) for e in c.entries.values() if e.body is not None)


async def test_send_file_sends_the_bytes(tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024 + 3)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    a, b = trio.socket.socketpair()
    ours, theirs = trio.SocketStream(a), trio.SocketStream(b)
    got = bytearray()

    async def read_all() -> None:
        while len(got) < len(data):
            got.extend(await theirs.receive_some(1 << 20))

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            assert await send_file(ours.socket.fileno(), path, len(data)) == len(data)
    assert bytes(got) == data
    await ours.aclose()
    await theirs.aclose()


async def test_send_file_stops_short_when_the_file_shrank(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)
    a, b = trio.socket.socketpair()
    ours, theirs = trio.SocketStream(a), trio.SocketStream(b)
    with trio.fail_after(5):
        assert await send_file(ours.socket.fileno(), path, 5000) == 1000
    assert await theirs.receive_some(5000) == b"x" * 1000
    await ours.aclose()
    await theirs.aclose()
