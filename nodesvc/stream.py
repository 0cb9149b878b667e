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
        self._resume_if_drained()
        return data

    async def read_into(self, buffer: memoryview, deadline: float | None = None) -> int:
        """Fill `buffer` with the next len(buffer) bytes: first with what was received
        already, then straight from the socket (the transport reads into `buffer` itself: no
        bytes object is made and nothing is copied in user space). Returns how many bytes
        came: fewer only if the other side closed first. Raises the error that broke the
        connection, or TimeoutError past the loop time `deadline`."""
        filled = self._take_into(buffer)
        if filled == len(buffer) or self._eof:
            return filled
        if self._error is not None:
            raise self._error
        assert self.transport is not None
        direct = _Direct(self, buffer, filled)
        self.transport.set_protocol(direct)
        self._resume_if_drained()
        timer = None if deadline is None else self.loop.call_at(deadline, _expire, direct.done)
        try:
            await direct.done
        finally:
            if timer is not None:
                timer.cancel()
            direct.give_back()
        if self._error is not None and direct.filled < len(buffer):
            raise self._error
        return direct.filled

    def _take_into(self, buffer: memoryview) -> int:
        """Copy what was received and not yet read into `buffer`, up to its size."""
        filled = 0
        while self._chunks and filled < len(buffer):
            data = self._chunks[0]
            n = min(len(data), len(buffer) - filled)
            buffer[filled:filled + n] = memoryview(data)[:n]
            if n == len(data):
                self._chunks.popleft()
            else:
                self._chunks[0] = data[n:]
            filled += n
            self._unread -= n
        self._resume_if_drained()
        return filled

    def _resume_if_drained(self) -> None:
        if self._reading_paused and self._unread <= self._high // 2 and self.transport:
            self._reading_paused = False
            self.transport.resume_reading()

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


class _Direct(asyncio.BufferedProtocol):
    """The protocol of a connection while a body is read straight into a buffer
    (Connection.read_into): the transport reads into the buffer's free part. Once it is
    full, the connection takes its protocol back at once, before the transport can ask for
    more room (an empty buffer would be a fatal error), so what follows goes to the
    connection as usual. Everything but reading is passed on to the connection."""

    def __init__(self, conn: Connection, buffer: memoryview, filled: int) -> None:
        self.conn = conn
        self.buffer = buffer
        self.filled = filled
        self.done: asyncio.Future[None] = conn.loop.create_future()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer[self.filled:]

    def buffer_updated(self, nbytes: int) -> None:
        self.filled += nbytes
        if self.filled >= len(self.buffer):
            self.give_back()
            _settle(self.done)

    def give_back(self) -> None:
        transport = self.conn.transport
        if transport is not None and transport.get_protocol() is self \
                and not transport.is_closing():
            transport.set_protocol(self.conn)

    def eof_received(self) -> bool:
        self.conn.eof_received()
        _settle(self.done)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.connection_lost(exc)
        _settle(self.done)

    def pause_writing(self) -> None:
        self.conn.pause_writing()

    def resume_writing(self) -> None:
        self.conn.resume_writing()


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


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
