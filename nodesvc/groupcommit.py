"""Group commit: one commit, in one go, for every item that arrived while the last one ran.

A durable write ends with a flush of the disk's cache whatever its size. When writes arrive
concurrently, one commit (one flush) serves all that are waiting. There is no committer thread
and no timer: `run(item)` is called on the writer's own thread; the first writer to find no
commit running commits everything waiting (its own item first), then hands the role to the
first writer that arrived meanwhile, and returns. So a lone write is committed at once, a
batch grows by itself as the load does, no writer commits more than one batch, and an item
costs no thread hop of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    """One waiting item: woken either with its result or to commit the next batch."""

    __slots__ = ("item", "leads", "result", "woken")

    def __init__(self, item: T) -> None:
        self.item = item
        self.result: R | BaseException | None = None
        self.woken = threading.Event()
        self.leads = False


class GroupCommit(Generic[T, R]):
    """`commit(batch)` returns one result or exception per item, in order."""

    def __init__(self, commit: Callable[[list[T]], list[R | BaseException]],
                 max_batch: int = 256) -> None:
        self._commit = commit
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: list[_Slot[T, R]] = []
        self._busy = False  # a commit is running (or its successor is being woken)
        self.batches = 0    # for metrics and tests: how many commits ran
        self.items = 0      # ... and how many items they carried

    def run(self, item: T) -> R:
        """Commit `item` (alone or in a batch) and return its result, or raise its exception.
        Blocks: call it from a worker thread, never from the event loop."""
        slot: _Slot[T, R] = _Slot(item)
        with self._lock:
            self._waiting.append(slot)
            leads = not self._busy
            self._busy = True
        if not leads:
            slot.woken.wait()
            leads = slot.leads
        if leads:
            self._lead()
        result = slot.result
        if isinstance(result, BaseException):
            raise result
        return result  # type: ignore[return-value]

    def _lead(self) -> None:
        with self._lock:  # the leader's own slot is first in line
            batch = self._waiting[:self.max_batch]
            del self._waiting[:self.max_batch]
        self._commit_batch(batch)
        with self._lock:
            if self._waiting:
                successor = self._waiting[0]
                successor.leads = True
                successor.woken.set()
            else:
                self._busy = False

    def _commit_batch(self, batch: list[_Slot[T, R]]) -> None:
        items = [slot.item for slot in batch]
        try:
            results = self._commit(items)
            if len(results) != len(items):
                raise RuntimeError(f"commit returned {len(results)} results for {len(items)}")
        except BaseException as exc:  # a bug in commit fails this batch, not the writers
            results = [exc] * len(items)
        self.batches += 1
        self.items += len(items)
        for slot, result in zip(batch, results, strict=True):
            slot.result = result
            slot.woken.set()
