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
