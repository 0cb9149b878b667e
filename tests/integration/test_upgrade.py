"""A rolling upgrade: nodes of the release before head-only image signatures (9da1595) and of
this one in one cluster. Every upload lands, whichever release leads and whichever stores."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import orjson
import pytest

from nodesvc.localcluster import LocalCluster
from nodesvc.stress import make_png_parts, tagged_png

ROOT = Path(__file__).resolve().parents[2]
OLD_RELEASE = "9da1595"  # signs every image over its body and accepts nothing else


@pytest.fixture
def old_code(tmp_path: Path) -> Path:
    """That release's `nodesvc`, from git, to run some nodes with (PYTHONPATH)."""
    found = subprocess.run(["git", "cat-file", "-e", f"{OLD_RELEASE}^{{commit}}"], cwd=ROOT,
                           capture_output=True)
    if found.returncode != 0:
        pytest.skip(f"release {OLD_RELEASE} is not in this clone's history")
    tar = subprocess.run(["git", "archive", OLD_RELEASE, "nodesvc"], cwd=ROOT,
                         capture_output=True, check=True).stdout
    out = tmp_path / "old-release"
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(out, filter="data")
    return out


def put(c: LocalCluster, via: int, name: str, size: int) -> int:
    data = tagged_png(make_png_parts(size), name)
    code, body = c.request(via, "PUT", f"/images/{name}", data)
    assert code == 201, (via, name, body[:300])
    return int(orjson.loads(body)["node"])


def test_uploads_land_while_old_and_new_releases_share_the_cluster(
        make_cluster, old_code: Path) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster()
    old = {"PYTHONPATH": str(old_code)}
    c.start(1, old)
    c.start(2)
    c.start(3, old)
    assert c.wait_leader(3, timeout=10) == 3
    # The old leader: a new follower forwards uploads to it (signed over the head, refused,
    # then over the body), and it stores on old and new nodes alike.
    stored_by = [put(c, 2, f"to-old-leader-{i}.png", 20_000) for i in range(6)]
    assert set(stored_by) == {1, 2, 3}
    # The old leader refused the head-only signature (the second try is what worked). Read
    # before it is killed: lines it had not yet written out die with it.
    assert "malformed peer signature" in c.wait_log(3, "malformed peer signature")
    # A new leader: it stores on an old node, whole and streamed (over 1 MiB).
    c.kill(3)
    assert c.wait_leader(2, nodes=[1, 2], timeout=10) == 2
    before = set(c.files(1))
    for i in range(3):
        put(c, 2, f"large-{i}.png", (1 << 20) + 200_000)
    for i in range(3):
        put(c, 1, f"from-old-follower-{i}.png", 20_000)
    landed_on_old = set(c.files(1)) - before
    assert any(n.startswith("large-") for n in landed_on_old), landed_on_old
    assert any(n.startswith("from-old-follower-") for n in landed_on_old), landed_on_old
    # The old follower did refuse the head-only signatures too.
    assert "malformed peer signature" in c.wait_log(1, "malformed peer signature")
    for node in (1, 2):
        code, _ = c.request(node, "GET", "/images/large-0.png")
        assert code == 200
