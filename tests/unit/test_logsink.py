"""Batched log lines: all of them arrive, in order, within the interval, and close flushes."""

from __future__ import annotations

import logging
import os
import time

import pytest

from nodesvc import logsink
from nodesvc.logsink import BatchingHandler


def test_lines_arrive_in_order_in_few_writes_and_close_flushes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    handler = BatchingHandler(write_end, interval=0.05)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("test-logsink")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    writes = {"n": 0}
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes["n"] += 1
        return real_write(fd, data)

    monkeypatch.setattr(logsink.os, "write", counting_write)
    try:
        for i in range(200):
            log.info("line %d ✓", i)
        time.sleep(0.2)  # the thread writes within its interval, without close()
        got = os.read(read_end, 1 << 20).decode()
        assert got.splitlines() == [f"line {i} ✓" for i in range(200)]
        assert 1 <= writes["n"] <= 3  # batched, not one write per line
        log.info("last")
        handler.close()  # no waiting: close writes what is left
        assert os.read(read_end, 1 << 20) == b"last\n"
    finally:
        log.removeHandler(handler)
        os.close(read_end)
        os.close(write_end)


def test_an_idle_handler_does_not_write_or_wake_and_a_late_line_still_arrives(
        monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    flushes = {"n": 0}
    real_flush = BatchingHandler.flush

    def counting_flush(self: BatchingHandler) -> None:
        flushes["n"] += 1
        real_flush(self)

    monkeypatch.setattr(BatchingHandler, "flush", counting_flush)
    handler = BatchingHandler(write_end, interval=0.01)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        time.sleep(0.2)  # 20 intervals with nothing to write
        assert flushes["n"] == 0
        handler.emit(logging.LogRecord("t", logging.INFO, __file__, 1, "late", None, None))
        time.sleep(0.1)
        assert os.read(read_end, 1 << 20) == b"late\n"
        assert flushes["n"] == 1
        handler.close()
    finally:
        os.close(read_end)
        os.close(write_end)
