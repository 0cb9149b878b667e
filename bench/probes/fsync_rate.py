"""Runs on a lab host: durable writes (file fsync + directory fsync, as an image stored on its
own) of 4 KiB, 64 KiB and 1 MiB with 1 and 8 writers; prints "size writers rate" lines."""

import os
import shutil
import sys
import threading
import time

directory = sys.argv[1]
os.makedirs(directory, exist_ok=True)


def writer(k: int, count: int, data: bytes) -> None:
    for i in range(count):
        fd = os.open(f"{directory}/{len(data)}-{k}-{i}", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        dfd = os.open(directory, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)


for size, total in ((4096, 400), (65536, 400), (1 << 20, 160)):
    data = os.urandom(size)
    for writers in (1, 8):
        each = total // writers
        threads = [threading.Thread(target=writer, args=(k, each, data)) for k in range(writers)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(size, writers, writers * each / (time.monotonic() - t0), flush=True)
shutil.rmtree(directory)
