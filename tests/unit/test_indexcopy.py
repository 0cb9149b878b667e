"""The index kept on disk: what is written when, and what a node reads back at start."""

from __future__ import annotations

from pathlib import Path

from nodesvc.indexcopy import Followed, IndexCopy, IndexFile, Snapshot

NODES = {1, 2, 3}


def save(copy: IndexCopy, f: IndexFile, index: dict[str, int]) -> None:
    """One tick's write."""
    batch = copy.take(index)
    if batch is not None:
        f.write(batch)


def test_a_snapshot_first_then_only_the_changes() -> None:
    copy = IndexCopy()
    index = {"a.png": 1}
    assert isinstance(copy.take(index), Snapshot)  # what the node started with, whole
    assert copy.take(index) is None and not copy.pending  # nothing changed since
    index["b.png"] = 2
    copy.changed("b.png", 2)
    del index["a.png"]
    copy.changed("a.png", None)
    assert copy.take(index) == [("b.png", 2), ("a.png", None)]


def test_what_was_written_is_read_back(tmp_path: Path) -> None:
    copy, f = IndexCopy(), IndexFile(tmp_path)
    index = {"a.png": 1, "b.png": 2}
    save(copy, f, index)
    for name, holder in (("c.png", 3), ("a.png", None), ("b.png", 1)):
        if holder is None:
            del index[name]
        else:
            index[name] = holder
        copy.changed(name, holder)
        save(copy, f, index)  # one line at a time, appended
    assert f.load(NODES) == (index, None, None) == ({"b.png": 1, "c.png": 3}, None, None)
    assert len(f.path.read_bytes().splitlines()) == 4


def test_a_replaced_index_is_written_whole_and_drops_the_changes_before(tmp_path: Path) -> None:
    copy, f = IndexCopy(), IndexFile(tmp_path)
    save(copy, f, {"old.png": 1})
    copy.changed("gone.png", 2)
    copy.replaced()  # a new leader learnt the index anew
    batch = copy.take({"new.png": 3})
    assert batch == Snapshot({"new.png": 3})
    f.write(batch)
    assert f.load(NODES) == ({"new.png": 3}, None, None)
    assert len(f.path.read_bytes().splitlines()) == 1


def test_many_changes_are_compacted_into_a_snapshot(tmp_path: Path) -> None:
    copy, f = IndexCopy(compact_at_least=5), IndexFile(tmp_path)
    index: dict[str, int] = {}
    save(copy, f, index)
    for i in range(12):  # the same name again and again: few names, many lines
        index["x.png"] = 1 + i % 3
        copy.changed("x.png", index["x.png"])
        save(copy, f, index)
    lines = f.path.read_bytes().splitlines()
    assert len(lines) <= 6 and lines[0].startswith(b'{"index"')
    assert f.load(NODES) == (index, None, None)


def test_a_torn_last_line_keeps_what_came_before_and_says_so(tmp_path: Path) -> None:
    f = IndexFile(tmp_path)
    f.write(Snapshot({"a.png": 1}))
    f.write([("b.png", 2)])
    with open(f.path, "ab") as out:
        out.write(b'["c.pn')  # power cut in the middle of a write
    index, problem, _ = f.load(NODES)
    assert index == {"a.png": 1, "b.png": 2}
    assert problem is not None and "line 3" in problem


def test_names_on_nodes_no_longer_in_the_config_and_bad_entries_are_left_out(
        tmp_path: Path) -> None:
    f = IndexFile(tmp_path)
    f.write(Snapshot({"a.png": 1, "b.png": 4}))
    f.write([("c.png", 5), ("../etc.png", 2), ("d.png", 2)])
    assert f.load(NODES) == ({"a.png": 1, "d.png": 2}, None, None)


def test_no_file_is_an_empty_index_and_a_failed_write_rewrites_it_whole(
        tmp_path: Path) -> None:
    f = IndexFile(tmp_path / "missing")
    assert f.load(NODES) == ({}, None, None)
    copy = IndexCopy()
    copy.take({})
    copy.changed("a.png", 1)
    copy.failed()  # the write of that change did not reach the disk
    assert copy.take({"a.png": 1}) == Snapshot({"a.png": 1})


def test_the_file_is_in_a_directory_no_image_can_be_named(tmp_path: Path) -> None:
    from nodesvc.storage import Store, valid_name

    f = IndexFile(tmp_path)
    f.write(Snapshot({"a.png": 1}))
    assert not valid_name(f.directory.name)
    store = Store(tmp_path)
    assert store.open() == [] and store.names() == []  # left alone, and not an image


def test_a_follower_reads_back_where_it_was_in_its_leaders_log(tmp_path: Path) -> None:
    """A restarted follower resumes from its last position instead of fetching the whole
    index again: the position after the changes it covers, in a snapshot and after appended
    changes alike; a leader's snapshot (no position) clears it."""
    copy, f = IndexCopy(), IndexFile(tmp_path)
    index = {"a.png": 1}
    f.write(copy.take(index, Followed("e1", 7)))  # a leader's snapshot just loaded
    assert f.load(NODES).follows == Followed("e1", 7)
    index["b.png"] = 2
    copy.changed("b.png", 2)
    copy.followed("e1", 8)
    copy.followed("e1", 9)  # a batch with no change to the index: only the newer one counts
    batch = copy.take(index)
    assert batch == [("b.png", 2), Followed("e1", 9)]
    f.write(batch)
    index["b.png"] = 3
    copy.changed("b.png", 3)
    copy.followed("e1", 10)
    save(copy, f, index)
    assert f.load(NODES) == ({"a.png": 1, "b.png": 3}, None, Followed("e1", 10))
    with f.path.open("ab") as torn:  # a crash in the middle of the next batch
        torn.write(b'["c.png", 3]\n{"follows": ["e1", 11')
    index_read, problem, follows = f.load(NODES)
    assert index_read == {"a.png": 1, "b.png": 3, "c.png": 3} and problem is not None
    assert follows == Followed("e1", 10)  # (replaying c.png from 10 sets it again)
    copy.replaced()  # this node leads now: its index is its own
    f.write(copy.take(index, None))
    assert f.load(NODES) == (index, None, None)
