"""`cloud-p2p-client status` and its exit code on real node processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from nodesvc.localcluster import LocalCluster

EXE = str(Path(sys.executable).with_name("cloud-p2p-client"))


def client_status(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, "--config", str(config), "status"], capture_output=True,
                          text=True, timeout=30)


def wait_leaders(cluster: LocalCluster, want: dict[int, int], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := cluster.leaders()) != want:
        assert time.monotonic() < deadline, f"leaders {got}, expected {want}"
        time.sleep(0.1)


def test_status_exits_1_when_the_nodes_do_not_agree_on_a_leader(
        make_cluster: Callable[[], LocalCluster], tmp_path: Path) -> None:
    """Node 3 signs with another secret (as with a clock far off): the others refuse its
    messages and it refuses theirs, so 1 and 2 follow 2 while 3 leads itself, every node up
    and answering. The table says NOT AGREED, and so must the exit code; once node 3 is
    back with the cluster's secret, all follow it and the status exits 0."""
    c = make_cluster()
    other = tmp_path / "other.secret"
    other.write_text(os.urandom(32).hex())
    other.chmod(0o600)
    c.start(1)
    c.start(2)
    c.start(3, env={"CLUSTER_SECRET_FILE": str(other)})
    wait_leaders(c, {1: 2, 2: 2, 3: 3})
    st = client_status(c.config_file)
    assert "Leader: NOT AGREED" in st.stdout, st.stdout
    assert all(row.split()[2] == "up" for row in st.stdout.splitlines()[1:4]), st.stdout
    assert st.returncode == 1, st.stdout

    c.kill(3)
    c.start(3)
    wait_leaders(c, {1: 3, 2: 3, 3: 3})
    st = client_status(c.config_file)
    assert st.returncode == 0 and "Leader: node 3 (all reachable nodes agree)" in st.stdout, \
        st.stdout


def test_status_exits_1_when_a_node_does_not_answer(cluster: LocalCluster) -> None:
    cluster.kill(1)
    wait_leaders(cluster, {2: 3, 3: 3})
    st = client_status(cluster.config_file)
    assert "Leader: node 3" in st.stdout and st.returncode == 1, st.stdout


def test_status_exits_1_when_a_node_runs_another_config(
        make_cluster: Callable[[], LocalCluster]) -> None:
    """Node 3 runs with another heartbeat (a deploy that stopped half-way): every node is up
    and all follow node 3, but the table says CONFIG MISMATCH and the exit code is 1, so a
    monitoring check of the exit code sees it."""
    c = make_cluster()
    other = c.workdir / "other.json"
    cfg = orjson.loads(c.config_file.read_bytes())
    cfg["heartbeat_ms"] = 200
    other.write_bytes(orjson.dumps(cfg))
    c.start(1)
    c.start(2)
    c.start(3, {"CONFIG_FILE": str(other)})
    wait_leaders(c, {1: 3, 2: 3, 3: 3})
    st = client_status(c.config_file)
    assert "Leader: node 3 (all reachable nodes agree)" in st.stdout, st.stdout
    assert "MISMATCH" in st.stdout and st.returncode == 1, st.stdout
