"""Group commit: one thread commits, in one go, every item submitted while it was busy.

A durable write costs a flush of the disk's cache whatever its size. When writes arrive
concurrently, the committer takes all that are waiting, commits them together (one flush),
and resolves each one's future; the writes that arrive meanwhile form the next batch. There
is no timer: an idle committer commits a lone write at once, so batching adds no latency, and
the batch grows by itself as the load does.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_STOP = object()


class GroupCommit(Generic[T, R]):
    """`commit(batch)` returns one result or exception per item, in order."""

    def __init__(self, commit: Callable[[list[T]], list[R | BaseException]],
                 max_batch: int = 256, name: str = "commit") -> None:
        self._commit = commit
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[T, Future[R]] | object] = queue.SimpleQueue()
        self.batches = 0   # for metrics and tests: how many commits ran
        self.items = 0     # ... and how many items they carried
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> Future[R]:
        future: Future[R] = Future()
        self._queue.put((item, future))
        return future

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

    def _commit_batch(self, batch: list[tuple[T, Future[R]]]) -> None:
        items = [item for item, _ in batch]
        try:
            results = self._commit(items)
        except BaseException as exc:  # a bug in commit fails this batch, not the thread
            results = [exc] * len(items)
        self.batches += 1
        self.items += len(items)
        for (_, future), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
