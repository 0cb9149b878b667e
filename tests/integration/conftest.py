"""Three real node processes on loopback, on free ports, in a temporary directory."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodesvc.localcluster import LocalCluster


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[object]:
    made: list[LocalCluster] = []

    def make(nodes: int = 3, **extra: int) -> LocalCluster:
        cluster = LocalCluster(tmp_path / f"cluster{len(made)}", free_ports(nodes), extra)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


@pytest.fixture
def cluster(make_cluster) -> LocalCluster:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster()
    c.start_all()
    c.wait_leader(3)
    return c
