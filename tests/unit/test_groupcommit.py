"""The group committer batches what arrives while it is busy, and keeps every result apart."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from nodesvc import storage
from nodesvc.groupcommit import GroupCommit
from nodesvc.storage import Conflict, Staged, Store, Stored


def test_items_submitted_while_busy_share_one_commit() -> None:
    release = threading.Event()
    batches: list[list[int]] = []

    def commit(batch: list[int]) -> list[int | BaseException]:
        batches.append(batch)
        release.wait(5)  # the first commit is slow: the others queue up meanwhile
        return [x * 10 for x in batch]

    gc: GroupCommit[int, int] = GroupCommit(commit)
    first = gc.submit(1)
    while not batches:
        pass
    rest = [gc.submit(i) for i in range(2, 7)]
    release.set()
    assert first.result(5) == 10
    assert [f.result(5) for f in rest] == [20, 30, 40, 50, 60]
    gc.close()
    assert batches == [[1], [2, 3, 4, 5, 6]]
    assert (gc.batches, gc.items) == (2, 6)


def test_an_exception_fails_its_own_item_only() -> None:
    gc: GroupCommit[int, int] = GroupCommit(
        lambda batch: [ValueError(x) if x == 2 else x for x in batch])
    futures = [gc.submit(i) for i in (1, 2, 3)]
    assert futures[0].result(5) == 1 and futures[2].result(5) == 3
    with pytest.raises(ValueError):
        futures[1].result(5)
    gc.close()


def test_a_crashing_commit_fails_the_batch_and_the_thread_lives_on() -> None:
    calls = {"n": 0}

    def commit(batch: list[int]) -> list[int | BaseException]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return batch

    gc: GroupCommit[int, int] = GroupCommit(commit)
    with pytest.raises(RuntimeError):
        gc.submit(1).result(5)
    assert gc.submit(2).result(5) == 2
    gc.close()


def test_an_event_loop_gets_a_whole_batch_back_in_one_call() -> None:
    release = threading.Event()
    batches: list[list[int]] = []

    def commit(batch: list[int]) -> list[int | BaseException]:
        batches.append(batch)
        release.wait(5)
        return [ValueError(x) if x == 3 else x * 10 for x in batch]

    gc: GroupCommit[int, int] = GroupCommit(commit)

    async def run() -> list[object]:
        loop = asyncio.get_running_loop()
        scheduled: list[object] = []
        real = loop.call_soon_threadsafe

        def counting(callback, *args):  # type: ignore[no-untyped-def]
            scheduled.append(callback)
            return real(callback, *args)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        first = asyncio.ensure_future(gc.commit(1))
        while not batches:
            await asyncio.sleep(0.001)
        rest = [asyncio.ensure_future(gc.commit(i)) for i in range(2, 6)]
        await asyncio.sleep(0.01)
        release.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        assert len(scheduled) == 2  # one wake-up per batch, not one per item
        return results

    results = asyncio.run(run())
    gc.close()
    assert batches == [[1], [2, 3, 4, 5]]
    assert results[:2] == [10, 20] and results[3:] == [40, 50]
    assert isinstance(results[2], ValueError)


def test_a_cancelled_waiter_does_not_stop_the_commit_or_the_others() -> None:
    release = threading.Event()
    committed: list[int] = []

    def commit(batch: list[int]) -> list[int | BaseException]:
        release.wait(5)
        committed.extend(batch)
        return batch

    gc: GroupCommit[int, int] = GroupCommit(commit)

    async def run() -> int:
        gone = asyncio.ensure_future(gc.commit(1))
        kept = asyncio.ensure_future(gc.commit(2))
        await asyncio.sleep(0.01)
        gone.cancel()
        release.set()
        return await kept

    assert asyncio.run(run()) == 2
    gc.close()
    assert sorted(committed) == [1, 2]


def test_a_batch_is_one_flush_and_nothing_is_visible_before_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store(tmp_path)
    s.open()
    flushes: list[str] = []
    real_syncfs = storage._syncfs
    assert real_syncfs is not None, "Linux has syncfs"

    def counting_syncfs(fd: int) -> int:
        # When the data is flushed, no final name exists yet: a crash here leaves only
        # temporary files, which open() removes.
        flushes.append(",".join(sorted(n for n in os.listdir(tmp_path)
                                       if not n.startswith(storage.TMP_PREFIX))))
        return int(real_syncfs(fd))

    monkeypatch.setattr(storage, "_syncfs", counting_syncfs)
    staged = [s.stage(f"img{i}.png", f"bytes {i}".encode()) for i in range(5)]
    assert all(isinstance(st, Staged) for st in staged)
    assert s.names() == []
    results = s.commit(staged)  # type: ignore[arg-type]
    assert flushes == [""]
    assert [r.name for r in results if isinstance(r, Stored)] == [f"img{i}.png" for i in range(5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"img{i}.png" for i in range(5)]
    assert (tmp_path / "img3.png").read_bytes() == b"bytes 3"


def test_a_name_taken_with_other_bytes_fails_only_that_write(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.open()
    a = s.stage("same.png", b"first")
    b = s.stage("same.png", b"second")  # two writers raced past the index (no lock held)
    c = s.stage("other.png", b"third")
    results = s.commit([a, b, c])  # type: ignore[list-item]
    assert isinstance(results[0], Stored) and results[0].created
    assert isinstance(results[1], Conflict)
    assert isinstance(results[2], Stored)
    assert (tmp_path / "same.png").read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.png", "same.png"]


def test_a_failed_flush_acknowledges_nothing(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store(tmp_path)
    s.open()

    def failing_syncfs(fd: int) -> int:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(storage, "_syncfs", failing_syncfs)
    staged = [s.stage(f"x{i}.png", b"data") for i in range(3)]
    results = s.commit(staged)  # type: ignore[arg-type]
    assert all(isinstance(r, OSError) for r in results)
    assert list(tmp_path.iterdir()) == [] and s.names() == []


def test_write_batch_keeps_each_result_in_its_place(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.open()
    s.write("taken.png", b"old")
    writes = [storage.Write("a.png", b"A", storage.sha256_hex(b"A")),
              storage.Write("taken.png", b"new", storage.sha256_hex(b"new")),
              storage.Write("taken.png", b"old", storage.sha256_hex(b"old")),
              storage.Write("b.png", b"B", storage.sha256_hex(b"B"))]
    results = s.write_batch(writes)
    assert isinstance(results[0], Stored) and results[0].created and results[0].name == "a.png"
    assert isinstance(results[1], Conflict)
    assert isinstance(results[2], Stored) and not results[2].created
    assert isinstance(results[3], Stored) and results[3].name == "b.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "taken.png"]


def test_flushed_images_leave_the_page_cache_and_no_file_stays_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each image's cached pages are dropped, but only once its batch is flushed (dropping
    dirty pages would lose nothing either, but would not drop them); every file is closed,
    after a flush that worked and after one that failed."""
    s = Store(tmp_path)
    s.open()
    events: list[str] = []
    real_syncfs, real_fadvise = storage._syncfs, os.posix_fadvise
    assert real_syncfs is not None

    def syncfs(fd: int) -> int:
        events.append("flush")
        return int(real_syncfs(fd))

    def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        assert advice == os.POSIX_FADV_DONTNEED
        events.append("drop")
        real_fadvise(fd, offset, length, advice)

    monkeypatch.setattr(storage, "_syncfs", syncfs)
    monkeypatch.setattr(os, "posix_fadvise", fadvise)
    open_before = len(os.listdir("/proc/self/fd"))
    writes = [storage.Write(f"p{i}.png", b"%d" % i) for i in range(3)]
    assert all(isinstance(r, Stored) for r in s.write_batch(writes))
    assert events == ["flush", "drop", "drop", "drop"]
    assert s.write("lone.png", b"one").created  # a batch of one: fsync, then drop
    assert events[-1] == "drop"
    assert len(os.listdir("/proc/self/fd")) == open_before

    def failing_syncfs(fd: int) -> int:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(storage, "_syncfs", failing_syncfs)
    results = s.write_batch([storage.Write(f"f{i}.png", b"x") for i in range(2)])
    assert all(isinstance(r, OSError) for r in results)
    assert len(os.listdir("/proc/self/fd")) == open_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lone.png", "p0.png", "p1.png",
                                                          "p2.png"]
