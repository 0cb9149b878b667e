"""Runs on a lab host: the disk's rate of durable writes, each image on its own (written,
fsynced, and its directory fsynced: no batching), of 4 KiB, 64 KiB and 1 MiB by 1, 8 and 64
writers, for SECONDS each; prints "size writers rate" lines.

Every cell starts on a settled disk: everything is synced before the clock starts, and each
cell writes into a new directory. Nothing is removed here (bench.compare.wipe_stored does it,
then waits a minute): the lab's disk is ext4 without a journal, whose inode allocator skips
every inode freed in the last minute and scans past each of them on every file creation, so a
cell that followed a deletion measured that scan (up to 0.8 ms of CPU per file) instead of the
disk.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from collections.abc import Callable

SIZES = (4096, 65536, 1 << 20)


_cells = itertools.count()


def settle(directory: str) -> str:
    """A new, empty directory under `directory`, on a disk with nothing left to write back."""
    cell = os.path.join(directory, f"cell-{os.getpid()}-{next(_cells)}")
    os.makedirs(cell)
    os.sync()
    time.sleep(0.5)
    return cell


def timed(writers: int, seconds: float, write: Callable[[int, int], None]) -> float:
    """Writes per second of `writers` threads each calling write(thread, n) until time is up."""
    done = [0] * writers
    stop = time.monotonic() + seconds

    def loop(k: int) -> None:
        n = 0
        while time.monotonic() < stop:
            write(k, n)
            n += 1
        done[k] = n

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(writers)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - t0)


def disk_rate(directory: str, size: int, writers: int, seconds: float) -> float:
    data = os.urandom(size)
    d = settle(directory)

    def write(k: int, n: int) -> None:
        fd = os.open(f"{d}/{k}-{n}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        dfd = os.open(d, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)

    return timed(writers, seconds, write)


if __name__ == "__main__":
    directory, seconds = sys.argv[1], float(sys.argv[2])
    for size in SIZES:
        for writers in (1, 8, 64):
            print(size, writers, disk_rate(directory, size, writers, seconds), flush=True)
    # The files stay: bench.compare.wipe_stored removes them with the rest and waits out
    # the allocator's minute (a deletion here would slow whatever runs next).
