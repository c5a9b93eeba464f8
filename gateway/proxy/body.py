"""The client's request body, read off its h11 connection: streamed, or buffered whole.

Two ways to carry a body upstream, chosen per route (``request_buffering``):

* **buffered** (the default, nginx's ``proxy_request_buffering on``): :func:`read_whole`
  reads the body completely *before* an upstream connection is taken: in memory up to
  ``proxy.body_buffer_size``, spooled to an unlinked temporary file above it, up to
  ``proxy.max_body_size`` (413), within ``proxy.body_timeout`` for the whole body (408).  A
  client trickling a byte every few seconds then holds one gateway connection (cheap), never
  an upstream connection and so never one of the legacy site's workers.
* **streamed**: :class:`ClientBody` hands the pump one piece at a time as it arrives; the
  upstream is fed at the client's pace (large uploads with flat memory, at the cost above).

Both read through :class:`ClientBody`, the one place that turns the client's bytes and h11's
verdicts into body events or failures: :class:`~gateway.errors.Refused` answers
(400 malformed, 408 too slow, 413 too large) or :class:`ClientGone`.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from typing import IO

import h11
import trio

from gateway.core.decisions import Reject
from gateway.errors import Refused as Refused  # the one Refused (gateway.errors)

# Up to 256 KiB per read: a large upload then costs a quarter of the reads, h11 events and
# spool writes (one thread hop each) of 64 KiB reads; measured 0.62x -> 1.1x nginx's MB/s for
# 100 MiB (bench/http_bench.py, issue 14).  A transient buffer, not the body's memory budget.
RECEIVE_SIZE = 256 * 1024
SPOOL_READ_SIZE = 256 * 1024  # one thread hop per 256 KiB when a spooled body goes upstream


class ClientGone(Exception):
    """The client closed or stopped reading: there is nobody left to answer."""


TOO_LARGE = Reject(413, "request body too large", close=True)
TOO_SLOW = Reject(408, "request body timed out", close=True)
MALFORMED = Reject(400, "malformed request body", close=True)


class ClientBody:
    """The body events of the request h11 is reading on ``stream``.

    ``read_timeout`` bounds each wait for bytes; ``deadline`` (a trio clock value, or
    ``inf``) bounds the whole body.  Either passing is a 408.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        conn: h11.Connection,
        *,
        read_timeout: float,
        deadline: float = float("inf"),
    ) -> None:
        self.stream = stream
        self.conn = conn
        self.read_timeout = read_timeout
        self.deadline = deadline

    def ready(self) -> h11.Data | h11.EndOfMessage | None:
        """The next body event if h11 has it without reading, else ``None`` (also for a
        malformed body: :meth:`next` raises that when it gets there)."""
        try:
            event = self.conn.next_event()
        except h11.RemoteProtocolError:
            return None
        if isinstance(event, h11.Data | h11.EndOfMessage):
            return event
        return None

    async def next(self) -> h11.Data | h11.EndOfMessage:
        """The next body event, reading the client as needed."""
        conn = self.conn
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                raise Refused(MALFORMED) from None
            if isinstance(event, h11.Data | h11.EndOfMessage):
                return event
            if event is not h11.NEED_DATA:
                raise ClientGone  # ConnectionClosed mid-body
            if trio.current_time() >= self.deadline:
                raise Refused(TOO_SLOW)
            with trio.move_on_at(min(self.deadline, trio.current_time() + self.read_timeout)):
                try:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    raise ClientGone from None
                if not data:
                    raise ClientGone  # EOF in the middle of the body
                conn.receive_data(bytes(data))
                continue
            raise Refused(TOO_SLOW)


class BufferedBody:
    """A whole request body: ``memory`` when it fit in ``body_buffer_size``, else ``file``.

    The file is a :func:`tempfile.TemporaryFile` (unlinked at creation: nothing is left on
    disk, even after a crash); :meth:`aclose` closes it.  File I/O runs in a worker thread.
    """

    def __init__(self) -> None:
        self.memory = bytearray()
        self.file: IO[bytes] | None = None
        self.size = 0

    async def add(self, data: bytes, *, memory_limit: int, temp_dir: str | None) -> None:
        self.size += len(data)
        if self.file is None and len(self.memory) + len(data) <= memory_limit:
            self.memory += data
            return
        if self.file is None:
            spilled = bytes(self.memory)
            self.memory = bytearray()
            self.file = await trio.to_thread.run_sync(_open_spool, temp_dir, spilled)
        await trio.to_thread.run_sync(self.file.write, data)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body from the start, in pieces (the memory buffer is one piece)."""
        if self.file is None:
            if self.memory:
                yield bytes(self.memory)
            return
        file = self.file
        await trio.to_thread.run_sync(file.seek, 0)
        while piece := await trio.to_thread.run_sync(file.read, SPOOL_READ_SIZE):
            yield piece

    async def aclose(self) -> None:
        if self.file is not None:
            file, self.file = self.file, None
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(file.close)


def _open_spool(temp_dir: str | None, first: bytes) -> IO[bytes]:
    file = tempfile.TemporaryFile(dir=temp_dir)  # noqa: SIM115 - closed by BufferedBody.aclose
    try:
        file.write(first)
    except OSError:
        file.close()
        raise
    return file


async def read_whole(
    body: ClientBody, *, max_size: int, memory_limit: int, temp_dir: str | None
) -> BufferedBody:
    """Read the rest of the body into a :class:`BufferedBody`; 413 past ``max_size``.

    A temporary file that cannot be written (disk full, no such folder) is the gateway's
    fault, not the client's: it leaves as :class:`OSError` for the caller to answer 5xx.
    """
    buffered = BufferedBody()
    try:
        await _fill(buffered, body, max_size=max_size, memory_limit=memory_limit, temp_dir=temp_dir)
    except BaseException:
        await buffered.aclose()
        raise
    return buffered


async def _fill(
    buffered: BufferedBody,
    body: ClientBody,
    *,
    max_size: int,
    memory_limit: int,
    temp_dir: str | None,
) -> None:
    while not isinstance(event := await body.next(), h11.EndOfMessage):
        if buffered.size + len(event.data) > max_size:
            raise Refused(TOO_LARGE)
        await buffered.add(bytes(event.data), memory_limit=memory_limit, temp_dir=temp_dir)
