"""Runs on a lab host, with the deployed cloud-p2p's Python: durable writes through cloud-p2p's
own store (nodesvc.storage + nodesvc.groupcommit, fsync on, exactly as a node writes) of 4 KiB,
64 KiB and 1 MiB with 8 and 64 writers; prints "size writers rate" lines. Compare with
fsync_rate.py, the disk's rate for one fsynced file at a time: group commit makes one flush
serve every write waiting for it."""

import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from nodesvc.groupcommit import GroupCommit
from nodesvc.storage import Store, Write, sha256_hex


def rate(directory: str, size: int, writers: int, seconds: float) -> float:
    """Durable writes per second of `writers` threads, each waiting for its write's commit."""
    data = os.urandom(size)
    digest = sha256_hex(data)
    store = Store(Path(tempfile.mkdtemp(dir=directory)), durable=True)
    store.open()
    committer = GroupCommit(store.write_batch)
    done = [0] * writers
    stop = time.monotonic() + seconds

    def writer(k: int) -> None:
        n = 0
        while time.monotonic() < stop:
            committer.submit(Write(f"w{k}-{n}.bin", data, digest)).result()
            n += 1
        done[k] = n

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    committer.close()
    shutil.rmtree(store.directory)
    return sum(done) / elapsed


def main() -> None:
    directory, seconds = sys.argv[1], float(sys.argv[2])
    os.makedirs(directory, exist_ok=True)
    for size in (4096, 65536, 1 << 20):
        for writers in (8, 64):
            print(size, writers, rate(directory, size, writers, seconds), flush=True)
    shutil.rmtree(directory)


main()
