"""A steady upload load in a background thread, for fault tests and benchmarks.

Each worker uploads distinct small PNGs back to back with the product's client (which retries
across leader changes) and records when each upload started and ended, so a fault test can
tell how long uploads stalled and whether any failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from nodesvc.client import Cluster, UploadResult
from nodesvc.config import Peer
from nodesvc.stress import make_png_parts, tagged_png


@dataclass(frozen=True)
class Record:
    started: float  # time.monotonic()
    ended: float
    result: UploadResult
    sha256: str


class BackgroundLoad:
    def __init__(self, peers: Sequence[Peer], prefix: str, concurrency: int = 4,
                 size: int = 8192, limit: int = 100_000, token: bytes | None = None) -> None:
        self.peers = list(peers)
        self.prefix = prefix
        self.concurrency = concurrency
        self.size = size
        self.limit = limit  # a bound, so a load never runs away
        self.token = token
        self.records: list[Record] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        client = Cluster(self.peers, pool_size=self.concurrency, deadline=30, token=self.token)
        parts = make_png_parts(self.size)

        async def worker(w: int) -> None:
            i = 0
            while not self._stop.is_set() and len(self.records) < self.limit:
                name = f"{self.prefix}-w{w}-{i:05d}.png"
                data = tagged_png(parts, name)
                t0 = time.monotonic()
                result = await client.upload(name, data)
                self.records.append(Record(t0, time.monotonic(), result,
                                           hashlib.sha256(data).hexdigest()))
                i += 1

        await asyncio.gather(*(worker(w) for w in range(self.concurrency)))
        await client.close()

    def start(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def stop(self) -> list[Record]:
        self._stop.set()
        self._thread.join(timeout=60)
        return self.records

    def __enter__(self) -> BackgroundLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.records) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.records)} of {count} uploads after {timeout}s")
            time.sleep(0.01)

    def failures(self) -> list[Record]:
        return [r for r in self.records if not r.result.ok]

    def recovery_after(self, t: float) -> float | None:
        """Seconds from `t` until an upload started after `t` succeeded."""
        ends = [r.ended for r in self.records if r.started >= t and r.result.ok]
        return min(ends) - t if ends else None
