"""The durable store: names, exact bytes, idempotence, conflicts, full disks, leftovers."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodesvc import storage
from nodesvc.storage import Conflict, DiskFull, Store, extension_for, valid_name


@pytest.mark.parametrize("name", ["a", "cat.png", "A-b_c.1", "9" * 255])
def test_good_names(name: str) -> None:
    assert valid_name(name)


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "-x", "a\x00b", "9" * 256,
                                  "café.png", "a b", ".", ".."])
def test_bad_names(name: str) -> None:
    assert not valid_name(name)


@given(st.text(max_size=300))
def test_an_accepted_name_can_never_leave_the_directory(name: str) -> None:
    if valid_name(name):
        assert "/" not in name and "\x00" not in name and name not in (".", "..")
        assert not name.startswith(".")


def test_write_keeps_exact_bytes_and_is_idempotent(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.open()
    data = os.urandom(5000)
    first = s.write("x.png", data)
    assert first.created and first.sha256 == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "x.png").read_bytes() == data
    again = s.write("x.png", data)
    assert not again.created and again.sha256 == first.sha256
    assert sorted(os.listdir(tmp_path)) == ["x.png"]
    with pytest.raises(Conflict) as err:
        s.write("x.png", b"other bytes")
    assert err.value.existing_sha256 == first.sha256
    assert (tmp_path / "x.png").read_bytes() == data


def test_the_longest_valid_name_is_stored(tmp_path: Path) -> None:
    """255 bytes, the most a filename can have: its temporary file must fit too (it took
    the whole name after its prefix, and every name over 242 bytes failed with 500)."""
    s = Store(tmp_path)
    s.open()
    name = "n" * 251 + ".png"
    assert storage.valid_name(name) and len(name) == 255
    assert s.write(name, b"long").created
    assert sorted(os.listdir(tmp_path)) == [name]


def test_open_removes_leftover_temporary_files_and_indexes_images(tmp_path: Path) -> None:
    (tmp_path / ".tmp-x.png-1234").write_bytes(b"half")
    (tmp_path / "old.png").write_bytes(b"kept")
    s = Store(tmp_path)
    assert s.open().leftovers == [".tmp-x.png-1234"]
    assert sorted(os.listdir(tmp_path)) == ["old.png"]
    assert "old.png" in s and len(s) == 1
    assert s.read("old.png") == b"kept"
    with pytest.raises(Conflict):
        s.write("old.png", b"new")  # an existing file is compared by hash, never replaced


def test_a_full_disk_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store(tmp_path)
    s.open()
    real_write = os.write
    calls = {"n": 0}

    def failing_write(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] > 1:  # some bytes land, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, bytes(data[:100]))

    monkeypatch.setattr(storage.os, "write", failing_write)
    with pytest.raises(DiskFull):
        s.write("big.png", b"x" * 10_000)
    assert os.listdir(tmp_path) == []
    assert "big.png" not in s


def test_size_is_the_stored_length_and_forgets_a_file_removed_by_hand(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.open()
    store.write("a.png", b"x" * 12345)
    assert store.size("a.png") == 12345 and store.size("b.png") is None
    (tmp_path / "a.png").unlink()
    assert store.size("a.png") is None and "a.png" not in store


def test_an_image_removed_by_hand_is_stored_again_not_said_to_exist(tmp_path: Path) -> None:
    """Its sha256 is cached: the same bytes again used to answer "exists" (200) with no file
    behind it."""
    store = Store(tmp_path)
    store.open()
    store.write("a.png", b"image")
    (tmp_path / "a.png").unlink()
    assert store.write("a.png", b"image").created
    assert (tmp_path / "a.png").read_bytes() == b"image"


def test_remove_copy_needs_the_matching_hash(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.open()
    stored = s.write("d.png", b"dup")
    assert not s.remove_copy("d.png", "0" * 64)
    assert (tmp_path / "d.png").exists()
    assert s.remove_copy("d.png", stored.sha256)
    assert not (tmp_path / "d.png").exists() and "d.png" not in s


@pytest.mark.parametrize(("head", "ext"), [
    (b"\x89PNG\r\n\x1a\n....", "png"), (b"\xff\xd8\xff\xe0", "jpg"), (b"GIF89a..", "gif"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"), (b"hello", "bin")])
def test_extension_from_magic_bytes(head: bytes, ext: str) -> None:
    assert extension_for(head) == ext
    assert storage.generated_name(head).endswith("." + ext)


@pytest.mark.parametrize(("durable", "linked", "fsyncs", "syncfs"),
                         [(True, True, 0, 1), (True, False, 2, 0), (False, False, 0, 0)])
def test_durable_writes_flush_once_when_linked_and_twice_otherwise(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool, linked: bool,
        fsyncs: int, syncfs: int) -> None:
    """A marked, linked write is made durable, name and all, by one syncfs; the fallback
    needs the file's fsync and then the directory's."""
    calls: list[int] = []
    flushes: list[int] = []
    real, real_syncfs = os.fsync, storage._syncfs
    assert real_syncfs is not None
    monkeypatch.setattr(storage.os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    monkeypatch.setattr(storage, "_syncfs", lambda fd: (flushes.append(fd), real_syncfs(fd))[1])
    s = Store(tmp_path, durable=durable)
    s._link_first = linked
    s.open()
    s.write("f.png", b"data")
    assert s.commit_mode == {(True, True): "one flush", (True, False): "two flushes"}.get(
        (durable, linked), "no flush")
    assert (len(calls), len(flushes)) == (fsyncs, syncfs)
    assert (tmp_path / "f.png").read_bytes() == b"data"
    assert os.listxattr(tmp_path / "f.png") == []  # the mark is off once it is durable


def test_a_file_that_appears_meanwhile_is_never_overwritten(tmp_path: Path) -> None:
    """Between stage and commit of the fallback path another writer (by hand, say) creates
    the name. The commit must keep that file's bytes and report the conflict, with
    renameat2's RENAME_NOREPLACE and with the link-and-unlink fallback alike; no temporary
    file is left."""
    for noreplace in (True, False):
        s = Store(tmp_path)
        s.open()
        s._link_first = False
        s._noreplace = noreplace and storage._renameat2 is not None
        staged = s.stage(f"f{noreplace}.png", b"ours")
        (tmp_path / f"f{noreplace}.png").write_bytes(b"theirs")
        [result] = s.commit([staged])
        assert isinstance(result, Conflict)
        assert (tmp_path / f"f{noreplace}.png").read_bytes() == b"theirs"
        staged = s.stage(f"g{noreplace}.png", b"ours")
        [result] = s.commit([staged])
        assert result.created and (tmp_path / f"g{noreplace}.png").read_bytes() == b"ours"
    assert sorted(os.listdir(tmp_path)) == ["fFalse.png", "fTrue.png", "gFalse.png",
                                            "gTrue.png"]


def test_a_linked_write_never_replaces_a_file_put_there_by_hand(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.open()
    (tmp_path / "f.png").write_bytes(b"theirs")  # not known to the store: by hand
    with pytest.raises(Conflict):
        s.write("f.png", b"ours")
    assert (tmp_path / "f.png").read_bytes() == b"theirs"
    assert not s.write("f.png", b"theirs").created
    assert os.listdir(tmp_path) == ["f.png"]


def _marked(path: Path, data: bytes, mark_for: bytes) -> None:
    """What a crash leaves of a linked write: the name, the mark, and some of the bytes."""
    path.write_bytes(data)
    os.setxattr(path, storage.PENDING_MARK,
                f"{len(mark_for)} {storage.sha256_hex(mark_for)}".encode())


def test_open_removes_a_marked_image_a_crash_cut_off_and_keeps_a_whole_one(
        tmp_path: Path) -> None:
    image = b"\x89PNG" + b"x" * 5000
    _marked(tmp_path / "torn.png", image[:4096], image)    # the tail never reached the disk
    _marked(tmp_path / "zeros.png", bytes(len(image)), image)  # allocated, never written
    _marked(tmp_path / "whole.png", image, image)          # flushed; the mark was still on
    (tmp_path / "plain.png").write_bytes(b"old")           # no mark: an image as before
    s = Store(tmp_path)
    found = s.open()
    assert sorted(found.torn) == ["torn.png", "zeros.png"]
    assert found.whole == ["whole.png"]
    assert sorted(os.listdir(tmp_path)) == ["plain.png", "whole.png"]
    assert sorted(s.names()) == ["plain.png", "whole.png"]
    assert os.listxattr(tmp_path / "whole.png") == []
    assert s.sha256("whole.png") == storage.sha256_hex(image)
    assert s.write("torn.png", image).created  # the client's retry stores it again


def test_the_same_name_twice_in_a_batch_is_stored_once(tmp_path: Path) -> None:
    """The second write of a name in one batch must not see the first before it is durable:
    it is staged apart and compared after the batch's flush."""
    s = Store(tmp_path)
    s.open()
    first = s.stage("t.png", b"one")
    again = s.stage("t.png", b"one")
    other = s.stage("t.png", b"two")
    assert "t.png" not in s  # nothing of the batch is an image of the store yet
    results = s.commit([first, again, other])
    assert results[0].created and not results[1].created
    assert isinstance(results[2], Conflict)
    assert os.listdir(tmp_path) == ["t.png"] and (tmp_path / "t.png").read_bytes() == b"one"


def test_a_failed_flush_leaves_no_linked_name_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(fd: int) -> int:
        storage.ctypes.set_errno(errno.EIO)
        return -1

    s = Store(tmp_path)
    s.open()
    monkeypatch.setattr(storage, "_syncfs", failing)
    staged = s.stage("a.png", b"A")
    assert staged.linked and (tmp_path / "a.png").exists()
    [result] = s.commit([staged])
    assert isinstance(result, OSError) and result.errno == errno.EIO
    assert os.listdir(tmp_path) == [] and "a.png" not in s


def test_a_filesystem_without_tmpfiles_takes_the_two_flush_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def no_tmpfile(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real_open(path, flags, mode)

    monkeypatch.setattr(storage.os, "open", no_tmpfile)
    s = Store(tmp_path)
    s.open()
    assert s.commit_mode == "two flushes"  # found out at open, shown in /status
    assert s.write("f.png", b"data").created
    assert not s._link_first
    staged = s.stage("g.png", b"more")
    assert not staged.linked and staged.tmp.startswith(str(tmp_path / storage.TMP_PREFIX))
    s.commit([staged])
    assert sorted(os.listdir(tmp_path)) == ["f.png", "g.png"]


def test_a_filesystem_without_renameat2_falls_back_to_link(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def einval(*args: object) -> int:
        ctypes_errno.append(errno.EINVAL)
        return -1

    ctypes_errno: list[int] = []
    monkeypatch.setattr(storage, "_renameat2", einval)
    monkeypatch.setattr(storage.ctypes, "get_errno", lambda: ctypes_errno[-1])
    s = Store(tmp_path)
    s._link_first = False  # (renames are the two-flush path's)
    s.open()
    assert s.write("f.png", b"data").created
    assert not s._noreplace  # remembered: the next write goes straight to link
    assert s.write("g.png", b"more").created
    assert len(ctypes_errno) == 1
    assert sorted(os.listdir(tmp_path)) == ["f.png", "g.png"]
