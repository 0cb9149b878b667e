"""The durable, validated image store of one node.

A write has two steps, so that many writes can share the expensive part (group commit; the
node runs both for a whole batch on its committer thread, see write_batch and groupcommit.py):
  stage: the bytes go to a new file that carries a "pending" mark (an extended attribute
         with their size and sha256) and is then linked under its final name: an unnamed
         file (O_TMPFILE) marked before its first byte, so a name on disk without the mark
         is always a whole image;
  commit, for the batch: one `syncfs` makes every staged file, its mark and its name
         durable together, one flush of the disk's cache for the whole batch; then the marks
         are taken off (no flush needed: a mark left behind only asks for a check). Only
         then is any image of the batch acknowledged.
After a crash, `open` checks each marked file against its mark: whole, it is kept and
unmarked; cut off (never acknowledged), it is removed. So a crash never leaves a partial
image under a valid name, and an image costs one flush per batch instead of two.

Where the filesystem has no O_TMPFILE or no user extended attributes, the store falls back to
the classic two flushes: the bytes go to a temporary file (a name no image can have), one
`syncfs` (or fsync) makes them durable, each is renamed to its final name (a rename that fails
instead of overwriting), and the directory is fsynced. A full disk leaves nothing behind and
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
# On a staged file until its batch is durable: b"<size> <sha256 hex>" (see the module's doc).
PENDING_MARK = "user.cloud-p2p.pending"

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
    linked: bool = False  # already under its final name (`tmp` is that path), marked pending


@dataclass
class Recovery:
    """What `Store.open` found of writes a crash (or a kill) cut short."""

    leftovers: list[str]  # temporary files of the fallback path, removed
    torn: list[str]       # marked images whose bytes were not all on disk, removed
    whole: list[str]      # marked images found whole, kept (their marks taken off)


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
        # Stage into marked, linked files (one flush a batch) until the filesystem refuses.
        self._link_first = durable and _linkat is not None and hasattr(os, "O_TMPFILE")
        self._linked: set[str] = set()  # names linked by stage, not yet through commit

    def open(self) -> Recovery:
        """Index the files already there and finish what a crash cut short: temporary files
        are removed, marked files checked against their mark (kept if whole, else removed)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._link_first:
            self._link_first = self._can_link()
        found = Recovery([], [], [])
        for entry in os.scandir(self.directory):
            if entry.name.startswith(TMP_PREFIX):
                os.unlink(entry.path)
                found.leftovers.append(entry.name)
            elif entry.is_file(follow_symlinks=False) and valid_name(entry.name):
                mark = _pending_mark(entry.path)
                if mark is None:
                    self._sha[entry.name] = None
                elif self._check_marked(entry.path, mark):
                    self._sha[entry.name] = mark[1]
                    found.whole.append(entry.name)
                else:
                    found.torn.append(entry.name)
        return found

    @property
    def commit_mode(self) -> str:
        """How a write is made durable here, for /status: "one flush" (marked, linked),
        "two flushes" (temporary file and rename), or "no flush" (durability none)."""
        if not self.durable:
            return "no flush"
        return "one flush" if self._link_first else "two flushes"

    def _can_link(self) -> bool:
        """Whether this filesystem has unnamed files and user extended attributes: one of each,
        tried (the unnamed file vanishes with its descriptor)."""
        try:
            fd = os.open(self._dir, os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o644)
        except OSError:
            return False
        try:
            os.setxattr(fd, PENDING_MARK, b"0 -")
        except OSError:
            return False
        finally:
            os.close(fd)
        return os.path.exists("/proc/self/fd")

    def _check_marked(self, path: str, mark: tuple[int, str]) -> bool:
        """A marked file found at start: whole (keep it, unmarked) or cut off (remove it)."""
        size, digest = mark
        with open(path, "rb") as f:
            data = f.read()
        if len(data) == size and sha256_hex(data) == digest:
            _unmark(path)
            return True
        os.unlink(path)
        return False

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
        """Step 1: write the bytes to a marked file under the final name, or to a temporary
        file (either way not yet durable, and not yet an image of this store). Returns
        Stored(created=False) when the same bytes are already there; raises Conflict for
        other bytes, DiskFull when the disk is full (nothing is left behind)."""
        if not valid_name(name):
            raise ValueError(f"invalid image name {name!r}")
        digest = digest or sha256_hex(data)
        if name in self._sha:
            if os.path.exists(self.filename(name)):
                return self._existing(name, digest, len(data))
            self._sha.pop(name, None)  # removed by hand behind our back: store it again
        if self._link_first and name not in self._linked:
            # (The same name twice in one batch: the second goes the other way, so that its
            # rename, after the batch's flush, finds the first and compares.)
            staged = self._stage_linked(name, data, digest)
            if staged is not None:
                return staged
        serial = next(self._tmp_serial)
        # The name's head only: a valid name can be 255 bytes, the most a filename can be.
        tmp = f"{self._tmp_prefix}{serial}-{name[:TMP_NAME_KEPT]}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        except OSError as exc:
            _unlink(tmp)
            raise _disk_error(exc) from None
        return Staged(name, tmp, digest, len(data))

    def _stage_linked(self, name: str, data: bytes, digest: str) -> Staged | Stored | None:
        """Stage into an unnamed file, marked pending before its first byte, then linked under
        its final name. None if this filesystem cannot (then it never tries again).
        Linked last, so that a name on disk without a mark is never less than an image."""
        try:
            fd = os.open(self._dir, os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno in _UNSUPPORTED:
                self._link_first = False
                return None
            raise _disk_error(exc) from None
        final = self.filename(name)
        try:
            try:
                os.setxattr(fd, PENDING_MARK, f"{len(data)} {digest}".encode())
            except OSError as exc:
                if exc.errno in _UNSUPPORTED:
                    self._link_first = False
                    return None
                raise
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if _linkat(_AT_FDCWD, f"/proc/self/fd/{fd}".encode(), _AT_FDCWD,
                       os.fsencode(final), _AT_SYMLINK_FOLLOW) != 0:
                err = ctypes.get_errno()
                if err == errno.EEXIST:  # written meanwhile, by hand: compare, never replace
                    self._sha[name] = None
                    return self._existing(name, digest, len(data))
                if err == errno.ENOENT:  # no /proc here
                    self._link_first = False
                    return None
                raise OSError(err, os.strerror(err), final)
        except OSError as exc:  # the unnamed file goes with its descriptor
            raise _disk_error(exc) from None
        finally:
            os.close(fd)
        self._linked.add(name)
        return Staged(name, final, digest, len(data), linked=True)

    def commit(self, batch: list[Staged]) -> list[Stored | BaseException]:
        """Step 2, for a batch: one flush for the bytes, marks and names of the linked files
        (then their marks come off); the fallback's files are renamed after it and the
        directory is flushed. One result per staged write, in order: Stored, or the exception
        for that write (a failed flush fails the whole batch; no image of it is acknowledged,
        and none is left under its name)."""
        results: list[Stored | BaseException] = []
        self._linked.difference_update(st.name for st in batch if st.linked)
        try:
            if self.durable:
                self._sync_data(batch)
        except OSError as exc:
            for st in batch:
                _unlink(st.tmp)
            return [_disk_error(exc)] * len(batch)
        renamed = False
        for st in batch:
            if st.linked:
                _unmark(st.tmp)
                results.append(Stored(st.name, st.sha256, st.size, created=True))
                continue
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
            renamed = True
            results.append(Stored(st.name, st.sha256, st.size, created=True))
        if renamed and self.durable:
            try:
                self._fsync_dir()
            except OSError as exc:
                return [_disk_error(exc)] * len(batch)
        for r in results:
            if isinstance(r, Stored) and r.created:
                self._sha[r.name] = r.sha256
        return results

    def _sync_data(self, batch: list[Staged]) -> None:
        """Make the staged bytes durable: one syncfs (a single journal commit and cache flush
        for all of them, names and marks included) for several files or a linked one; fsync
        for a lone temporary file. Without syncfs, every file and the directory."""
        linked = any(st.linked for st in batch)
        if (len(batch) > 1 or linked) and _syncfs is not None:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                if _syncfs(fd) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            return
        for st in batch:
            fd = os.open(st.tmp, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if linked:
            self._fsync_dir()

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


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _pending_mark(path: str) -> tuple[int, str] | None:
    """(size, sha256) of a file's pending mark, or None: not marked (or unreadable: then it is
    taken as the image it looks like, as before marks)."""
    try:
        raw = os.getxattr(path, PENDING_MARK, follow_symlinks=False)
    except OSError:  # ENODATA: no mark, the common case; ENOTSUP: no marks on this filesystem
        return None
    size, _, digest = raw.decode("ascii", "replace").partition(" ")
    if not size.isdigit() or len(digest) != 64:
        return (-1, "")  # a mark we never wrote: cannot be checked, so not whole
    return int(size), digest


def _unmark(path: str) -> None:
    """Take a durable image's pending mark off (no flush: a mark left behind by a crash only
    makes the next start check that file)."""
    with contextlib.suppress(OSError):
        os.removexattr(path, PENDING_MARK, follow_symlinks=False)


def _disk_error(exc: OSError) -> BaseException:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(str(exc))
    return exc


def _load_libc(name: str) -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """A libc function (ctypes lets go of the GIL while it runs), or None where libc has none:
    syncfs(2) (without it every file is fsynced on its own), renameat2(2) (glibc 2.28+;
    without it a link and an unlink), linkat(2) (without it the two-flush path)."""
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name)  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_syncfs = _load_libc("syncfs")
_renameat2 = _load_libc("renameat2")
_linkat = _load_libc("linkat")  # (os.link cannot pass AT_SYMLINK_FOLLOW without a dir fd)
_AT_FDCWD = -100
_AT_SYMLINK_FOLLOW = 0x400
_RENAME_NOREPLACE = 1
# What a filesystem without O_TMPFILE or user extended attributes answers.
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL, errno.EPERM}
