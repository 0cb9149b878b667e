"""Tee: a streamed body is read once from its source and can be sent again whole; the
server's 100 Continue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from nodesvc.http import HttpClient, HttpServer, Request, Response, ServerLimits, Tee
from nodesvc.stream import Connection, start_server


async def source(parts: list[bytes], pulled: list[int]) -> AsyncIterator[bytes]:
    for i, part in enumerate(parts):
        pulled.append(i)
        yield part


def test_a_second_replay_sends_what_was_read_and_then_the_rest() -> None:
    async def run() -> None:
        pulled: list[int] = []
        tee = Tee(source([b"ab", b"cd", b"ef"], pulled))
        first = tee.replay()
        assert await anext(first) == b"ab"  # a target takes one chunk, then fails
        again = [c async for c in tee.replay()]  # the next target gets everything
        assert again == [b"ab", b"cd", b"ef"]
        assert pulled == [0, 1, 2]  # each chunk was taken from the client once
        assert tee.complete
        assert await tee.read() == b"abcdef"

    asyncio.run(run())


def test_a_whole_body_is_a_complete_tee() -> None:
    async def run() -> None:
        tee = Tee.of(b"whole")
        assert tee.complete
        assert [c async for c in tee.replay()] == [b"whole"]
        assert await Tee.of(b"").read() == b""

    asyncio.run(run())


def test_a_broken_source_raises_to_the_reader() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"part"
        raise ConnectionResetError("client gone")

    async def run() -> None:
        tee = Tee(broken())
        with pytest.raises(ConnectionResetError):
            await tee.read()
        assert not tee.complete

    asyncio.run(run())


@pytest.mark.parametrize(("handler_seconds", "expect_100"), [(0.0, False), (0.3, True)])
def test_a_100_continue_for_a_whole_body_comes_only_when_the_answer_is_slow(
        handler_seconds: float, expect_100: bool) -> None:
    """A peer sends head and body at once and asks for 100 Continue as a sign of life: a
    quick answer makes the 100 needless, a slow one must not leave the sender in silence."""
    async def handler(request: Request) -> Response:
        await asyncio.sleep(handler_seconds)
        return Response(201, request.body)

    async def run() -> bytes:
        server = HttpServer(handler, ServerLimits(max_body=1024, continue_delay=0.05))
        listener = await start_server(server.serve, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\nConnection: close\r\n\r\nhello")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        listener.close()
        return answer

    answer = asyncio.run(run())
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201") == expect_100
    assert answer.startswith(b"HTTP/1.1 201") != expect_100
    assert answer.endswith(b"hello")


@pytest.mark.parametrize(("max_idle", "connections"), [(16, 40 + 24), (64, 40)])
def test_the_pool_keeps_as_many_idle_connections_as_it_is_allowed(
        max_idle: int, connections: int) -> None:
    """Two waves of 40 concurrent requests: a pool that may keep all 40 serves the second wave
    on them; one that keeps 16 must open 24 new connections for it."""
    accepted = 0

    async def handler(request: Request) -> Response:
        await asyncio.sleep(0.05)  # keeps all 40 requests of a wave in flight at once
        return Response(200, b"ok")

    async def run() -> None:
        nonlocal accepted
        server = HttpServer(handler, ServerLimits(max_body=1024))

        async def counting(reader: Connection, writer: Connection) -> None:
            nonlocal accepted
            accepted += 1
            await server.serve(reader, writer)

        listener = await start_server(counting, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        client = HttpClient(max_idle=max_idle)
        for _ in range(2):
            answers = await asyncio.gather(*(client.request("127.0.0.1", port, "GET", "/x")
                                             for _ in range(40)))
            assert {a.status for a in answers} == {200}
        await client.close()
        listener.close()

    asyncio.run(run())
    assert accepted == connections


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_large_bodies_one_after_the_other_on_one_connection(loop_kind: str) -> None:
    """Each answer comes before the next request is sent: a body that arrived whole, past the
    connection's high-water mark, before it was read must not leave reading paused (a
    direct-read experiment left it paused: the third request went unread)."""
    large = b"x" * (1 << 20)

    async def handler(request: Request) -> Response:
        return Response(200, b"%d" % len(request.body))

    async def run() -> list[bytes]:
        server = HttpServer(handler, ServerLimits(max_body=4 << 20))
        listener = await start_server(server.serve, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers = []
        for _ in range(6):
            writer.write(b"PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                         % len(large) + large)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            answers.append(head.split(b"\r\n", 1)[0] + b" " + await reader.readexactly(7))
        writer.close()
        listener.close()
        return answers

    if loop_kind == "uvloop":
        import uvloop
        answers = uvloop.run(run())
    else:
        answers = asyncio.run(run())
    assert answers == [b"HTTP/1.1 200 OK 1048576"] * 6
