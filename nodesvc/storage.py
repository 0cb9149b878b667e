"""The durable, validated image store of one node.

A write is: a temporary file (a name no valid image can have), every byte written, fsync,
a hard link to the final name (which fails instead of overwriting), unlink of the temporary
name, fsync of the directory. Only then is the image acknowledged. A full disk removes the
temporary file and reports DiskFull, so no partial image ever appears under a valid name.

All methods block: the node calls them from an executor, never on the event loop.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
TMP_PREFIX = ".tmp-"  # never a valid image name: names start with a letter or digit

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
class Stored:
    name: str
    sha256: str
    size: int
    created: bool  # False: the same bytes were already there


class Store:
    def __init__(self, directory: Path, *, durable: bool = True) -> None:
        self.directory = directory
        self.durable = durable
        self._sha: dict[str, str | None] = {}  # name -> sha256 (None until first needed)

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

    def write(self, name: str, data: bytes) -> Stored:
        """Store `data` under `name` durably; idempotent for identical bytes."""
        final = self.path(name)
        digest = sha256_hex(data)
        if name in self._sha:
            return self._existing(name, digest, len(data))
        tmp = self.directory / f"{TMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if self.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, final)  # never overwrites, unlike rename
            except FileExistsError:
                self._sha[name] = None
                return self._existing(name, digest, len(data))
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(str(exc)) from None
            raise
        finally:
            tmp.unlink(missing_ok=True)
        if self.durable:
            self._fsync_dir()
        self._sha[name] = digest
        return Stored(name, digest, len(data), created=True)

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
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
