"""The durable, validated image store of one node.

A write has two steps, so that many writes can share the expensive part (group commit; the
node runs both for a whole batch on its committer thread, see write_batch and groupcommit.py):
  stage: the bytes go to a temporary file, a name no valid image can have;
  commit, for the batch: the batch's temporary files are made durable (one
         `syncfs` for the batch, or one fsync for a batch of one), each is renamed to its
         final name (a rename that fails instead of overwriting), and the directory is
         fsynced once. Only then is any image of the batch acknowledged.
So a crash never leaves a partial image under a valid name, and the cost of the two flushes
is paid once per batch instead of once per image. A full disk removes the temporary file and
reports DiskFull.

All methods block: the node calls them from threads, never on the event loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import itertools
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
TMP_PREFIX = ".tmp-"  # never a valid image name: names start with a letter or digit
TMP_NAME_KEPT = 200   # of an image's name in its temporary file's (the rest: prefix, pid, serial)

# Magic bytes -> extension, for POST /images (a generated name).
_MAGIC: list[tuple[bytes, str]] = [
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tif"),
    (b"MM\x00*", "tif"),
]


def valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


def extension_for(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    return "bin"


def generated_name(data: bytes) -> str:
    return f"{uuid.uuid4().hex}.{extension_for(data)}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Conflict(Exception):
    """The name is taken by different bytes."""

    def __init__(self, existing_sha256: str) -> None:
        super().__init__(existing_sha256)
        self.existing_sha256 = existing_sha256


class DiskFull(Exception):
    """No space left; nothing was kept."""


@dataclass(frozen=True)
class Write:
    """An image to store: its name, bytes and sha256 (hex), if the caller has it; else the
    committer computes it (off the event loop, whose GIL hashlib would hand over)."""

    name: str
    data: bytes
    sha256: str | None = None


@dataclass(frozen=True)
class Staged:
    """Bytes in a temporary file, waiting for their batch's commit."""

    name: str
    tmp: str  # a path (a str: this is the hot path, and pathlib costs microseconds a call)
    sha256: str
    size: int
    fd: int = -1  # the file, kept open until its batch is flushed (durable stores only)


@dataclass(frozen=True)
class Stored:
    name: str
    sha256: str
    size: int
    created: bool  # False: the same bytes were already there


class Store:
    def __init__(self, directory: Path, *, durable: bool = True) -> None:
        self.directory = directory
        self._dir = str(directory)
        self.durable = durable
        self._sha: dict[str, str | None] = {}  # name -> sha256 (None until first needed)
        # Temporary names: unique without a random draw per write (leftovers of a crash are
        # removed by open(), and the pid keeps two processes apart).
        self._tmp_serial = itertools.count()
        self._tmp_prefix = os.path.join(self._dir, f"{TMP_PREFIX}{os.getpid()}-")
        self._noreplace = _renameat2 is not None  # until the filesystem says it has none

    def open(self) -> list[str]:
        """Index the files already there and remove temporary files of a crashed write.
        Returns the names of the removed leftovers."""
        self.directory.mkdir(parents=True, exist_ok=True)
        removed = []
        for entry in os.scandir(self.directory):
            if entry.name.startswith(TMP_PREFIX):
                os.unlink(entry.path)
                removed.append(entry.name)
            elif entry.is_file(follow_symlinks=False) and valid_name(entry.name):
                self._sha[entry.name] = None
        return removed

    def __contains__(self, name: str) -> bool:
        return name in self._sha

    def __len__(self) -> int:
        return len(self._sha)

    def names(self) -> list[str]:
        return list(self._sha)

    def path(self, name: str) -> Path:
        if not valid_name(name):
            raise ValueError(f"invalid image name {name!r}")
        return self.directory / name

    def filename(self, name: str) -> str:
        """Where an image is (or would be) stored, as a string: for log lines, without the
        cost of a Path per image."""
        return os.path.join(self._dir, name)

    def sha256(self, name: str) -> str:
        cached = self._sha.get(name)
        if cached is None:
            cached = sha256_hex(self.path(name).read_bytes())
            self._sha[name] = cached
        return cached

    def read(self, name: str) -> bytes | None:
        if name not in self._sha:
            return None
        try:
            return self.path(name).read_bytes()
        except FileNotFoundError:
            self._sha.pop(name, None)  # removed by hand behind our back
            return None

    def size(self, name: str) -> int | None:
        """The stored image's size in bytes (its file's, without reading it), or None."""
        if name not in self._sha:
            return None
        try:
            return os.stat(self.filename(name)).st_size
        except FileNotFoundError:
            self._sha.pop(name, None)  # removed by hand behind our back
            return None

    def write(self, name: str, data: bytes) -> Stored:
        """Store `data` under `name` durably, alone (a batch of one); idempotent."""
        result = self.write_batch([Write(name, data, sha256_hex(data))])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def write_batch(self, writes: list[Write]) -> list[Stored | BaseException]:
        """Stage and commit a batch in one go, on one thread (the group committer's step):
        one result per write, in order, Stored or the exception for that write."""
        results: list[Stored | BaseException | None] = []
        staged: list[Staged] = []
        slots: list[int] = []
        for w in writes:
            try:
                r = self.stage(w.name, w.data, w.sha256)
            except (Conflict, DiskFull, OSError) as exc:
                results.append(exc)
                continue
            if isinstance(r, Stored):
                results.append(r)
            else:
                slots.append(len(results))
                results.append(None)
                staged.append(r)
        for slot, result in zip(slots, self.commit(staged) if staged else [], strict=True):
            results[slot] = result
        return [r for r in results if r is not None]

    def stage(self, name: str, data: bytes, digest: str | None = None) -> Staged | Stored:
        """Step 1: write the bytes to a temporary file (not yet durable, not yet visible).
        Returns Stored(created=False) when the same bytes are already there; raises Conflict
        for other bytes, DiskFull when the disk is full (nothing is left behind)."""
        if not valid_name(name):
            raise ValueError(f"invalid image name {name!r}")
        digest = digest or sha256_hex(data)
        if name in self._sha:
            if os.path.exists(self.filename(name)):
                return self._existing(name, digest, len(data))
            self._sha.pop(name, None)  # removed by hand behind our back: store it again
        serial = next(self._tmp_serial)
        # The name's head only: a valid name can be 255 bytes, the most a filename can be.
        tmp = f"{self._tmp_prefix}{serial}-{name[:TMP_NAME_KEPT]}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            _unlink(tmp)
            raise _disk_error(exc) from None
        if not self.durable:
            os.close(fd)
            fd = -1
        return Staged(name, tmp, digest, len(data), fd)

    def commit(self, batch: list[Staged]) -> list[Stored | BaseException]:
        """Step 2, for a batch: durable data, then the final names, then a durable directory.
        One result per staged write, in order: Stored, or the exception for that write (a
        failed flush fails the whole batch; no image of it is acknowledged)."""
        results: list[Stored | BaseException] = []
        try:
            if self.durable:
                self._sync_data(batch)
        except OSError as exc:
            for st in batch:
                _close(st.fd)
                _unlink(st.tmp)
            return [_disk_error(exc)] * len(batch)
        for st in batch:
            _drop_cached(st.fd)
        named = False
        for st in batch:
            try:
                self._publish(st.tmp, self.filename(st.name))
            except FileExistsError:  # written meanwhile (by hand, or a write without lock)
                _unlink(st.tmp)
                self._sha[st.name] = None
                try:
                    results.append(self._existing(st.name, st.sha256, st.size))
                except Conflict as exc:
                    results.append(exc)
                continue
            except OSError as exc:
                _unlink(st.tmp)
                results.append(_disk_error(exc))
                continue
            named = True
            results.append(Stored(st.name, st.sha256, st.size, created=True))
        if named and self.durable:
            try:
                self._fsync_dir()
            except OSError as exc:
                return [_disk_error(exc)] * len(batch)
        for r in results:
            if isinstance(r, Stored) and r.created:
                self._sha[r.name] = r.sha256
        return results

    def _sync_data(self, batch: list[Staged]) -> None:
        """Make the staged bytes durable: fsync for one file; for several, one syncfs (a single
        journal commit and cache flush for all of them, instead of one per file)."""
        if len(batch) > 1 and _syncfs is not None:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                if _syncfs(fd) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            return
        for st in batch:
            if st.fd >= 0:
                os.fsync(st.fd)
                continue
            fd = os.open(st.tmp, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _publish(self, tmp: str, final: str) -> None:
        """Give a staged file its final name; FileExistsError, and nothing changed, if that
        name exists. One rename(2) with RENAME_NOREPLACE (Linux 3.15+, on ext4, xfs, btrfs and
        tmpfs), else a link(2) and an unlink(2): both never overwrite, the first takes one
        system call (and one hand-back of the GIL) per image instead of two."""
        if self._noreplace:
            if _renameat2(_AT_FDCWD, os.fsencode(tmp), _AT_FDCWD, os.fsencode(final),
                          _RENAME_NOREPLACE) == 0:
                return
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOSYS):
                raise OSError(err, os.strerror(err), final)
            self._noreplace = False  # this filesystem has no such rename
        os.link(tmp, final)
        _unlink(tmp)

    def meta(self, name: str) -> tuple[str, int] | None:
        """(sha256, mtime in ns) of a stored image, or None."""
        if name not in self._sha:
            return None
        try:
            mtime = self.path(name).stat().st_mtime_ns
        except FileNotFoundError:
            self._sha.pop(name, None)
            return None
        return self.sha256(name), mtime

    def remove_copy(self, name: str, sha256: str) -> bool:
        """Delete a redundant copy, only if it holds exactly these bytes."""
        if name not in self._sha or self.sha256(name) != sha256:
            return False
        self.path(name).unlink(missing_ok=True)
        self._sha.pop(name, None)
        if self.durable:
            self._fsync_dir()
        return True

    def _existing(self, name: str, digest: str, size: int) -> Stored:
        existing = self.sha256(name)
        if existing != digest:
            raise Conflict(existing)
        return Stored(name, digest, size, created=False)

    def _fsync_dir(self) -> None:
        fsync_directory(self.directory)


def fsync_directory(directory: Path | str) -> None:
    """Make the names in `directory` durable (a rename or a new file in it)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_cached(fd: int) -> None:
    """Close a flushed image's file, first telling the kernel its cached pages can go.

    An image just stored is seldom read again soon, and on a virtual machine writing into
    page-cache pages the guest has not used for a while costs far more than writing into
    pages it has just freed: up to 2.7 ms of kernel time per 1 MiB file written and fsynced,
    0.3 ms when each file's pages are dropped after its fsync (bench/probes/page_cache.py,
    docs/benchmarks.md). Dropping them also keeps write-once images from pushing useful
    pages out of the cache. The pages are clean (flushed), so this loses nothing; a later
    read comes from the disk."""
    if fd < 0:
        return
    with contextlib.suppress(OSError):  # only advice: a filesystem may keep its pages
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    _close(fd)


def _close(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _disk_error(exc: OSError) -> BaseException:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(str(exc))
    return exc


def _load_libc(name: str) -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """A libc function (ctypes lets go of the GIL while it runs), or None where libc has none:
    syncfs(2) (without it every file is fsynced on its own), renameat2(2) (glibc 2.28+;
    without it a link and an unlink)."""
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name)  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_syncfs = _load_libc("syncfs")
_renameat2 = _load_libc("renameat2")
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
