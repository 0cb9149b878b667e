"""Connections hand on what the transport delivered, without copies, and keep asyncio's
flow control and end-of-stream behaviour."""

from __future__ import annotations

import asyncio

import pytest

from nodesvc.stream import Connection, open_connection, start_server


class FakeTransport(asyncio.Transport):
    """Records flow-control calls; nothing is sent anywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self.closing = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.closing


def connected(high_water: int = 100) -> tuple[Connection, FakeTransport]:
    conn = Connection(high_water)
    transport = FakeTransport()
    conn.connection_made(transport)
    return conn, transport


def test_a_read_returns_the_delivered_bytes_themselves_or_a_slice() -> None:
    async def run() -> None:
        conn, _ = connected()
        first, second = b"a" * 40, b"b" * 30
        conn.data_received(first)
        conn.data_received(second)
        assert await conn.read(64) is first  # not a copy
        assert await conn.read(10) == b"b" * 10
        assert await conn.read(64) == b"b" * 20
        conn.eof_received()
        assert conn.at_eof() and await conn.read(64) == b""

    asyncio.run(run())


def test_reading_pauses_above_the_high_water_mark_and_resumes_below_half() -> None:
    async def run() -> None:
        conn, transport = connected(high_water=100)
        for _ in range(3):
            conn.data_received(b"x" * 40)
        assert transport.paused  # 120 unread
        await conn.read(40)
        assert transport.paused  # 80: still above half
        await conn.read(40)
        assert not transport.paused  # 40

    asyncio.run(run())


def test_a_waiting_read_wakes_for_data_and_a_broken_connection_raises() -> None:
    async def run() -> None:
        conn, _ = connected()
        pending = asyncio.ensure_future(conn.read(10))
        await asyncio.sleep(0)
        conn.data_received(b"hi")
        assert await pending == b"hi"
        pending = asyncio.ensure_future(conn.read(10))
        await asyncio.sleep(0)
        conn.connection_lost(ConnectionResetError("reset by peer"))
        with pytest.raises(ConnectionResetError):
            await pending
        with pytest.raises(ConnectionResetError):
            await conn.drain()

    asyncio.run(run())


def test_a_read_deadline_fires_only_when_nothing_came() -> None:
    async def run() -> None:
        conn, _ = connected()
        loop = asyncio.get_running_loop()
        conn.data_received(b"ready")
        assert await conn.read(10, loop.time() - 1) == b"ready"  # past deadline, data there
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await conn.read(10, t0 + 0.05)
        assert 0.04 <= loop.time() - t0 < 1.0
        pending = asyncio.ensure_future(conn.read(10, loop.time() + 0.05))
        await asyncio.sleep(0)
        conn.data_received(b"late")
        assert await pending == b"late"
        await asyncio.sleep(0.1)  # the cancelled timer must not touch a later read
        conn.data_received(b"more")
        assert await conn.read(10) == b"more"

    asyncio.run(run())


def test_a_real_socket_round_trip_of_a_large_message() -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB: several reads, flow control on both sides

    async def run() -> bytes:
        async def echo_length(reader: Connection, writer: Connection) -> None:
            got = 0
            while data := await reader.read(1 << 16):
                got += len(data)
            writer.write(str(got).encode())
            await writer.drain()
            writer.close()

        server = await start_server(echo_length, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = await open_connection("127.0.0.1", port)
        conn.write(payload)
        await conn.drain()
        assert conn.transport is not None
        conn.transport.write_eof()
        answer = b""
        while data := await asyncio.wait_for(conn.read(100), 5):
            answer += data
        conn.close()
        await conn.wait_closed()
        server.close()
        return answer

    assert asyncio.run(run()) == str(len(payload)).encode()


def _run_on(loop_kind: str, coro_fn):  # type: ignore[no-untyped-def]
    if loop_kind == "uvloop":
        import uvloop
        return uvloop.run(coro_fn())
    return asyncio.run(coro_fn())


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_read_into_fills_a_buffer_from_the_socket_and_then_reads_on_as_before(
        loop_kind: str) -> None:
    """What came before read_into is copied in, the rest is read into the buffer by the
    transport itself, and the bytes after it (the next request) arrive as usual."""
    body = bytes(range(256)) * 12288  # 3 MiB: many reads by the transport

    async def run() -> tuple[bytes, bytearray, bytes, str]:
        got: asyncio.Future[tuple[bytes, bytearray, bytes, str]] = \
            asyncio.get_running_loop().create_future()

        async def handler(reader: Connection, writer: Connection) -> None:
            first = await reader.read(1000)
            buffer = bytearray(len(body) - len(first))
            n = await reader.read_into(memoryview(buffer), reader.loop.time() + 10)
            assert n == len(buffer)
            tail = b""
            while len(tail) < 4:
                tail += await reader.read(4)
            protocol = type(reader.transport.get_protocol()).__name__  # type: ignore[union-attr]
            got.set_result((first, buffer, tail, protocol))
            writer.close()

        server = await start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = await open_connection("127.0.0.1", port)
        conn.write(body + b"TAIL")
        await conn.drain()
        result = await asyncio.wait_for(got, 10)
        conn.close()
        server.close()
        return result

    first, buffer, tail, protocol = _run_on(loop_kind, run)
    assert first + buffer == body
    assert tail == b"TAIL"
    assert protocol == "_ServerConnection"  # the connection has its protocol back


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
@pytest.mark.parametrize("sender", ["silent", "closes"])
def test_read_into_times_out_when_the_sender_stops_and_returns_short_when_it_closes(
        loop_kind: str, sender: str) -> None:
    async def run() -> str:
        got: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def handler(reader: Connection, writer: Connection) -> None:
            try:
                n = await reader.read_into(memoryview(bytearray(1 << 20)),
                                           reader.loop.time() + 0.3)
                got.set_result(f"{n} bytes")
            except TimeoutError:
                got.set_result("timeout")

        server = await start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = await open_connection("127.0.0.1", port)
        conn.write(b"x" * 300_000)
        await conn.drain()
        if sender == "closes":
            assert conn.transport is not None
            conn.transport.write_eof()
        outcome = await asyncio.wait_for(got, 10)
        conn.close()
        server.close()
        return outcome

    assert _run_on(loop_kind, run) == ("timeout" if sender == "silent" else "300000 bytes")
