"""What writing into the page cache costs, with and without dropping each file's pages once it
is durable (storage._drop_cached): files of SIZE bytes written and fsynced one after the
other, in turn with both ways, ROUNDS times; prints one line per run with files per second
and kernel and user CPU per file.

    python bench/probes/page_cache.py DIR [--files 1500] [--size 1048576] [--rounds 2]

Runs anywhere (the host, or a lab host); it writes FILES x SIZE bytes per run into new
directories under DIR and removes them at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import time


def run(directory: str, files: int, data: bytes, drop: bool) -> tuple[float, float, float]:
    """(files/s, kernel ms per file, user ms per file)."""
    os.makedirs(directory)
    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    for i in range(files):
        fd = os.open(os.path.join(directory, f"f{i}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            os.write(fd, data)
            os.fsync(fd)
            if drop:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    seconds = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (files / seconds, (after.ru_stime - before.ru_stime) / files * 1000,
            (after.ru_utime - before.ru_utime) / files * 1000)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir")
    p.add_argument("--files", type=int, default=1500)
    p.add_argument("--size", type=int, default=1 << 20)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    data = os.urandom(args.size)
    base = os.path.join(args.dir, f"page-cache-probe-{os.getpid()}")
    try:
        for r in range(args.rounds):
            for drop in (False, True):
                rate, kernel, user = run(os.path.join(base, f"{r}-{drop}"), args.files, data,
                                         drop)
                print(f"{'pages dropped' if drop else 'pages kept':14} {rate:7.0f} files/s  "
                      f"kernel {kernel:.3f} ms/file  user {user:.3f} ms/file", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
