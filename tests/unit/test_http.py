"""Tee: a streamed body is read once from its source and can be sent again whole."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest

from nodesvc.http import Tee


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
        assert tee.complete and tee.sha256() == hashlib.sha256(b"abcdef").digest()
        assert await tee.read() == b"abcdef"

    asyncio.run(run())


def test_the_digest_is_refused_before_the_end() -> None:
    async def run() -> None:
        tee = Tee(source([b"x", b"y"], []))
        await anext(tee.replay())
        with pytest.raises(RuntimeError):
            tee.sha256()

    asyncio.run(run())


def test_a_whole_body_is_a_complete_tee() -> None:
    async def run() -> None:
        tee = Tee.of(b"whole")
        assert tee.complete and tee.sha256() == hashlib.sha256(b"whole").digest()
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
