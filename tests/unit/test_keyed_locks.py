"""KeyedLocks: one writer per name at a time, and no lock left behind."""

from __future__ import annotations

import asyncio

import pytest

from nodesvc.node import KeyedLocks


def test_holders_of_one_key_take_turns_and_the_key_goes_when_all_are_done() -> None:
    async def run() -> None:
        locks = KeyedLocks()
        order: list[str] = []

        async def hold(key: str, tag: str) -> None:
            async with locks.hold(key):
                order.append(f"{tag}+")
                await asyncio.sleep(0.01)
                order.append(f"{tag}-")

        await asyncio.gather(hold("a", "1"), hold("a", "2"), hold("b", "3"))
        assert order.index("1-") < order.index("2+")  # same key: one after the other
        assert order.index("3+") < order.index("1-")  # other key: meanwhile
        assert locks.keys() == []

    asyncio.run(run())


def test_a_waiter_cancelled_or_a_holder_failing_leaves_no_lock_behind() -> None:
    async def run() -> None:
        locks = KeyedLocks()
        entered = asyncio.Event()

        async def holder() -> None:
            async with locks.hold("a"):
                entered.set()
                await asyncio.sleep(0.05)
                raise ValueError("the write failed")

        first = asyncio.ensure_future(holder())
        await entered.wait()
        waiter = asyncio.ensure_future(locks.hold("a").__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(ValueError):
            await first
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert "a" not in locks
        async with locks.hold("a"):  # still usable
            assert "a" in locks

    asyncio.run(run())
