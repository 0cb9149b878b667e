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
    assert s.open() == [".tmp-x.png-1234"]
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


@pytest.mark.parametrize(("durable", "fsyncs"), [(True, 2), (False, 0)])
def test_durable_writes_sync_the_file_and_the_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool, fsyncs: int) -> None:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(storage.os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    s = Store(tmp_path, durable=durable)
    s.open()
    s.write("f.png", b"data")
    assert len(calls) == fsyncs
    assert (tmp_path / "f.png").read_bytes() == b"data"


@pytest.mark.parametrize("noreplace", [True, False])
def test_a_file_that_appears_meanwhile_is_never_overwritten(
        tmp_path: Path, noreplace: bool) -> None:
    """Between stage and commit another writer (by hand, say) creates the name. The commit
    must keep that file's bytes and report the conflict, with renameat2's RENAME_NOREPLACE and
    with the link-and-unlink fallback alike; no temporary file is left."""
    s = Store(tmp_path)
    s.open()
    s._noreplace = noreplace and storage._renameat2 is not None
    staged = s.stage("f.png", b"ours")
    (tmp_path / "f.png").write_bytes(b"theirs")
    [result] = s.commit([staged])
    assert isinstance(result, Conflict)
    assert (tmp_path / "f.png").read_bytes() == b"theirs"
    assert sorted(os.listdir(tmp_path)) == ["f.png"]
    staged = s.stage("g.png", b"ours")
    [result] = s.commit([staged])
    assert result.created and (tmp_path / "g.png").read_bytes() == b"ours"
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
    s.open()
    assert s.write("f.png", b"data").created
    assert not s._noreplace  # remembered: the next write goes straight to link
    assert s.write("g.png", b"more").created
    assert len(ctypes_errno) == 1
    assert sorted(os.listdir(tmp_path)) == ["f.png", "g.png"]
