"""Runs on a lab host with the deployed cloud-p2p's Python: durable writes through cloud-p2p's
own store and group commit (nodesvc.storage and nodesvc.groupcommit, fsync on, exactly as a
node writes: each writer waits for its write's commit), and for comparison
the disk's rate for images written one by one (fsync_rate.py), in alternating cells under the
same conditions: 4 KiB, 64 KiB and 1 MiB, 8 and 64 writers, SECONDS a cell, ROUNDS rounds.
Prints "size writers store_rate disk_rate" lines (medians over the rounds)."""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

from fsync_rate import SIZES, disk_rate, settle, timed

from nodesvc.groupcommit import GroupCommit
from nodesvc.storage import Store, Write, sha256_hex


def store_rate(directory: str, size: int, writers: int, seconds: float) -> float:
    data = os.urandom(size)
    digest = sha256_hex(data)
    store = Store(Path(settle(directory)), durable=True)
    store.open()
    committer = GroupCommit(store.write_batch)
    try:
        return timed(writers, seconds, lambda k, n: committer.submit(
            Write(f"w{k}-{n}.bin", data, digest)).result() and None)
    finally:
        committer.close()


if __name__ == "__main__":
    directory, seconds, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    for size in SIZES:
        for writers in (8, 64):
            store, disk = [], []
            for _ in range(rounds):
                disk.append(disk_rate(directory, size, writers, seconds))
                store.append(store_rate(directory, size, writers, seconds))
            print(size, writers, statistics.median(store), statistics.median(disk), flush=True)
    # The files stay (see fsync_rate.py): bench.compare.wipe_stored removes them.
