"""Log lines written in batches: one write to stdout per `interval` instead of one per line.

A busy node logs two lines per upload (the seed's "RECORDED" and "Saved" lines); writing each
with its own system call, and journald reading each on its own, cost more CPU than the upload's
own bookkeeping. Here lines are formatted by the caller and written by a small thread at most
`interval` seconds later, so a line is late by at most that much (and at most that much is lost
if the process is killed with SIGKILL; a normal exit writes everything). The thread sleeps
until a line comes: an idle node does not wake it 50 times a second for nothing.
"""

from __future__ import annotations

import logging
import os
import threading


class BatchingHandler(logging.Handler):
    def __init__(self, fd: int = 1, interval: float = 0.02) -> None:
        super().__init__()
        self._fd = fd
        self.interval = interval
        self._lines: list[str] = []
        self._swap = threading.Lock()
        self._wake = threading.Event()  # set by the first line after a flush
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        with self._swap:
            self._lines.append(line)
            first = len(self._lines) == 1
        if first:
            self._wake.set()

    def flush(self) -> None:
        with self._swap:
            lines, self._lines = self._lines, []
        if not lines:
            return
        data = memoryview("".join(lines).encode("utf-8", "replace"))
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except OSError:
            pass  # stdout is gone (journald restarted, pipe closed): nothing to write to

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self.flush()
        super().close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.wait(self.interval):  # lets the lines of that interval gather
                return  # close() writes the rest
            self._wake.clear()  # before the flush: a line after it sets the event again
            self.flush()
