"""Group commit: one thread commits, in one go, every item submitted while it was busy.

A durable write costs a flush of the disk's cache whatever its size. When writes arrive
concurrently, the committer takes all that are waiting, commits them together (one flush),
and hands each its result; the writes that arrive meanwhile form the next batch. There is no
timer: an idle committer commits a lone write at once, so batching adds no latency, and the
batch grows by itself as the load does.

Results go back in one piece per batch: to an event loop (`commit`), one call scheduled on the
loop resolves the whole batch's futures, instead of one cross-thread wake-up (and one
concurrent.futures hand-over) per item; to a thread (`submit`), through a Future each.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_STOP = object()

Waiter = Future | asyncio.Future  # type: ignore[type-arg]


class GroupCommit(Generic[T, R]):
    """`commit(batch)` returns one result or exception per item, in order."""

    def __init__(self, commit: Callable[[list[T]], list[R | BaseException]],
                 max_batch: int = 256, name: str = "commit") -> None:
        self._commit = commit
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[T, Waiter] | object] = queue.SimpleQueue()
        self.batches = 0   # for metrics and tests: how many commits ran
        self.items = 0     # ... and how many items they carried
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> Future[R]:
        """From any thread: a Future for the item's result."""
        future: Future[R] = Future()
        self._queue.put((item, future))
        return future

    async def commit(self, item: T) -> R:
        """From the event loop: the item's result (or its exception). If the caller is
        cancelled, the item is committed all the same; its result is dropped."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put((item, future))
        return await future

    def close(self) -> None:
        """Commit what was submitted, then stop the thread."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stopping = True
                    break
                batch.append(more)
            self._commit_batch(batch)  # type: ignore[arg-type]

    def _commit_batch(self, batch: list[tuple[T, Waiter]]) -> None:
        items = [item for item, _ in batch]
        try:
            results: list[R | BaseException] = self._commit(items)
        except BaseException as exc:  # a bug in commit fails this batch, not the thread
            results = [exc] * len(items)
        self.batches += 1
        self.items += len(items)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Waiter, R | BaseException]]] = {}
        for (_, waiter), result in zip(batch, results, strict=True):
            if isinstance(waiter, Future):
                _settle(waiter, result)
            else:
                by_loop.setdefault(waiter.get_loop(), []).append((waiter, result))
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle_all, settled)


def _settle(waiter: Waiter, result: object) -> None:
    if waiter.done():
        return  # cancelled: the caller stopped waiting (the item was committed all the same)
    if isinstance(result, BaseException):
        waiter.set_exception(result)
    else:
        waiter.set_result(result)


def _settle_all(settled: list[tuple[Waiter, object]]) -> None:
    for waiter, result in settled:
        _settle(waiter, result)
