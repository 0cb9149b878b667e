"""Group commit batches what arrives while a commit runs, and keeps every result apart; the
store flushes each file on its writer's thread and the directory once per batch."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nodesvc import storage
from nodesvc.groupcommit import GroupCommit
from nodesvc.storage import Conflict, Staged, Store, Stored


def test_items_that_arrive_while_a_commit_runs_share_the_next_one() -> None:
    release = threading.Event()
    batches: list[list[int]] = []
    threads: list[str] = []

    def commit(batch: list[int]) -> list[int | BaseException]:
        batches.append(batch)
        threads.append(threading.current_thread().name)
        if batch == [1]:
            release.wait(5)  # the first commit is slow: the others line up meanwhile
        return [x * 10 for x in batch]

    gc: GroupCommit[int, int] = GroupCommit(commit)
    with ThreadPoolExecutor(6, thread_name_prefix="writer") as pool:
        first = pool.submit(gc.run, 1)
        while not batches:
            pass
        rest = [pool.submit(gc.run, i) for i in range(2, 7)]
        while len(gc._waiting) < 5:  # all five in line behind the running commit
            pass
        release.set()
        assert first.result(5) == 10
        assert [f.result(5) for f in rest] == [20, 30, 40, 50, 60]
    assert batches == [[1], [2, 3, 4, 5, 6]]
    assert (gc.batches, gc.items) == (2, 6)
    # No thread of its own: the writers commit, and the first one's thread is not kept on.
    assert all(name.startswith("writer") for name in threads)
    assert threads[0] != threads[1]


def test_a_lone_item_is_committed_at_once_on_the_callers_thread() -> None:
    seen: list[str] = []
    gc: GroupCommit[int, int] = GroupCommit(
        lambda batch: [seen.append(threading.current_thread().name) or x for x in batch])
    assert gc.run(7) == 7
    assert seen == [threading.current_thread().name]


def test_an_exception_fails_its_own_item_only() -> None:
    gc: GroupCommit[int, int] = GroupCommit(
        lambda batch: [ValueError(x) if x == 2 else x for x in batch])
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(gc.run, i) for i in (1, 2, 3)]
        assert futures[0].result(5) == 1 and futures[2].result(5) == 3
        with pytest.raises(ValueError):
            futures[1].result(5)


def test_a_crashing_commit_fails_the_batch_and_the_next_one_runs() -> None:
    calls = {"n": 0}

    def commit(batch: list[int]) -> list[int | BaseException]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return batch

    gc: GroupCommit[int, int] = GroupCommit(commit)
    with pytest.raises(RuntimeError):
        gc.run(1)
    assert gc.run(2) == 2


def test_many_writers_lose_nothing_and_share_commits() -> None:
    gc: GroupCommit[int, int] = GroupCommit(lambda batch: [x + 1 for x in batch])
    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(gc.run, range(2000))) == list(range(1, 2001))
    assert gc.items == 2000


def test_nothing_is_visible_before_the_data_and_directory_flushes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store(tmp_path)
    s.open()
    flushed: list[str] = []
    real = os.fsync

    def recording_fsync(fd: int) -> None:
        # Record what is visible under a final name at each flush.
        flushed.append(",".join(sorted(n for n in os.listdir(tmp_path)
                                       if not n.startswith(storage.TMP_PREFIX))))
        real(fd)

    monkeypatch.setattr(storage.os, "fsync", recording_fsync)
    staged = [s.stage(f"img{i}.png", f"bytes {i}".encode()) for i in range(5)]
    assert all(isinstance(st, Staged) for st in staged)
    assert flushed == [""] * 5  # each file's data flushed, while no final name exists
    assert s.names() == []
    results = s.commit(staged)  # type: ignore[arg-type]
    assert len(flushed) == 6  # one directory flush for the batch of five
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


def test_a_failed_data_flush_keeps_nothing(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store(tmp_path)
    s.open()

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(storage.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        s.write("x.png", b"data")
    assert list(tmp_path.iterdir()) == [] and s.names() == []


def test_concurrent_writes_all_land_whole(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.open()
    blobs = {f"c{i}.png": os.urandom(3000 + i) for i in range(200)}
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda kv: s.write(*kv), blobs.items()))
    assert all(r.created for r in results)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == blobs
    assert s.commits.items == 200
