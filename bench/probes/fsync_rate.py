"""Runs on a lab host: durable 64 KiB writes (file fsync + directory fsync, as cloud-p2p
does for every image) with 1 and 8 writers; prints "writers rate" lines."""

import os
import shutil
import sys
import threading
import time

directory = sys.argv[1]
os.makedirs(directory, exist_ok=True)
data = bytes(65536)


def writer(k: int, count: int) -> None:
    for i in range(count):
        fd = os.open(f"{directory}/{k}-{i}", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        dfd = os.open(directory, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)


for writers in (1, 8):
    each = 400 // writers
    threads = [threading.Thread(target=writer, args=(k, each)) for k in range(writers)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(writers, writers * each / (time.monotonic() - t0))
shutil.rmtree(directory)
