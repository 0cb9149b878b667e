"""TCP connections that hand on received bytes without copying them.

asyncio's StreamReader copies every byte it receives into one bytearray, and out again on each
read: two copies of every upload per node, about 0.45 ms per MiB here. A Connection keeps the
bytes objects the transport delivers and a read of at least their size returns them as they
are; only a read smaller than what arrived slices. It offers the small part of the streams API
the server and the client use: read(n) and at_eof() (reader), write, writelines, drain,
close, is_closing and wait_closed (writer), so one object serves as both.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

# Reading stops while more than this is received and unread (flow control, as a StreamReader's
# limit), and starts again below half of it.
HIGH_WATER = 1 << 20


class Connection(asyncio.Protocol):
    def __init__(self, high_water: int = HIGH_WATER) -> None:
        self._high = high_water
        self._chunks: deque[bytes] = deque()
        self._unread = 0
        self._eof = False
        self._error: BaseException | None = None
        self._lost = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        # Kept: in Python 3.11 every asyncio.get_running_loop() is also a getpid() system call.
        self.loop = asyncio.get_running_loop()
        self._closed = self.loop.create_future()
        self.transport: asyncio.Transport | None = None

    # ---- protocol callbacks (called by the event loop) ------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._unread += len(data)
        self._wake_reader()
        if self._unread > self._high and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return True  # keep the transport: an answer may still be sent

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._eof = True
        if exc is not None:
            self._error = exc
        self._wake_reader()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(exc or ConnectionResetError("connection lost"))
        self._drain_waiters.clear()
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # ---- reading ------------------------------------------------------------------------

    async def read(self, n: int, deadline: float | None = None) -> bytes:
        """Up to `n` bytes as they arrived (b"" at the end); the error that broke the
        connection, if one did; TimeoutError if nothing came by the loop time `deadline`.

        The deadline is one timer, set only when the read has to wait: cheaper than an
        asyncio.timeout() around every read (a Timeout object and a look-up of the current
        task each time), which cost a node 5% of its CPU per upload."""
        if self._error is not None:
            raise self._error
        while not self._chunks:
            if self._eof:
                return b""
            waiter = self._read_waiter = self.loop.create_future()
            timer = None if deadline is None else self.loop.call_at(deadline, _expire, waiter)
            try:
                await waiter
            finally:
                self._read_waiter = None
                if timer is not None:
                    timer.cancel()
            if self._error is not None:
                raise self._error
        data = self._chunks[0]
        if len(data) <= n:
            self._chunks.popleft()
        else:
            self._chunks[0] = data[n:]
            data = data[:n]
        self._unread -= len(data)
        if self._reading_paused and self._unread <= self._high // 2 and self.transport:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    def _wake_reader(self) -> None:
        if self._read_waiter is not None and not self._read_waiter.done():
            self._read_waiter.set_result(None)

    # ---- writing ------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def writelines(self, pieces: list[bytes]) -> None:
        assert self.transport is not None
        self.transport.writelines(pieces)

    async def drain(self) -> None:
        """Wait until the transport's send buffer is below its limit; ConnectionResetError
        if the connection is gone."""
        if self._error is not None:
            raise self._error
        if self.transport is not None and self.transport.is_closing():
            await asyncio.sleep(0)  # let connection_lost run, as StreamWriter.drain does
        if self._lost:
            raise ConnectionResetError("connection lost")
        if not self._writing_paused:
            return
        waiter = self.loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


Handler = Callable[[Connection, Connection], Awaitable[None]]


async def start_server(handler: Handler, host: str, port: int,
                       **kwargs: object) -> asyncio.Server:
    """Like asyncio.start_server: `handler(reader, writer)` runs for each connection, both
    being its Connection."""
    return await asyncio.get_running_loop().create_server(  # type: ignore[call-overload]
        lambda: _ServerConnection(handler), host, port, **kwargs)


async def open_connection(host: str, port: int) -> Connection:
    _, conn = await asyncio.get_running_loop().create_connection(Connection, host, port)
    return conn


class _ServerConnection(Connection):
    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self._handler = handler
        self.task: asyncio.Task[None] | None = None  # the handler, kept referenced while it runs

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.task = self.loop.create_task(self._handler(self, self))
