"""A real three-node cluster on loopback: election, forwarding, placement, storage."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import re
import time

import orjson

from nodesvc.client import Cluster
from nodesvc.config import load_config
from nodesvc.localcluster import LocalCluster
from nodesvc.stress import make_png_parts, tagged_png


def stored_everywhere(cluster: LocalCluster) -> dict[str, list[tuple[int, bytes]]]:
    where: dict[str, list[tuple[int, bytes]]] = {}
    for node in cluster.ports:
        for name, data in cluster.files(node).items():
            where.setdefault(name, []).append((node, data))
    return where


def upload_many(cluster: LocalCluster, names: list[str], size: int = 4096,
                concurrency: int = 10) -> dict[str, tuple[int, bytes]]:
    """Upload distinct PNGs with the product's client; return name -> (status, bytes)."""
    parts = make_png_parts(size)
    peers = load_config(cluster.config_file).peers

    async def run() -> dict[str, tuple[int, bytes]]:
        client = Cluster(peers, pool_size=concurrency)
        sem = asyncio.Semaphore(concurrency)
        out: dict[str, tuple[int, bytes]] = {}

        async def one(name: str) -> None:
            data = tagged_png(parts, name)
            async with sem:
                r = await client.upload(name, data)
            out[name] = (r.status, data)

        await asyncio.gather(*(one(n) for n in names))
        await client.close()
        return out

    return asyncio.run(run())


def test_head_tells_the_size_a_get_would_send_and_no_body(cluster: LocalCluster) -> None:
    """On the node that holds the image and on one that asks another: HEAD answers GET's
    head, Content-Length included, and sends nothing after it (the next request on the same
    connection proves it). It used to say Content-Length: 0."""
    data = tagged_png(make_png_parts(10_000), "head")
    code, body = cluster.request(1, "PUT", "/images/head.png", data)
    assert code == 201, body
    holder = orjson.loads(body)["node"]
    for node in (holder, 1 + holder % 3):
        conn = http.client.HTTPConnection(cluster.host, cluster.ports[node], timeout=10)
        try:
            conn.request("HEAD", "/images/head.png")
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read() == b""
            assert resp.getheader("content-length") == str(len(data))
            assert resp.getheader("content-type") == "image/png"
            conn.request("GET", "/images/head.png")
            again = conn.getresponse()
            assert again.status == 200 and again.read() == data
        finally:
            conn.close()


def test_an_unreadable_image_is_a_500_from_its_node_and_named_by_the_others(
        cluster: LocalCluster) -> None:
    """A file the node cannot read (made a directory here; a chmod by hand on a real host)
    is not "not found": its node answers 500 and says why, and the others say which node
    answered what, instead of "could not be asked"."""
    code, body = cluster.request(1, "PUT", "/images/broken.png",
                                 tagged_png(make_png_parts(3000), "broken"))
    assert code == 201, body
    holder = orjson.loads(body)["node"]
    path = cluster.shared_dir(holder) / "broken.png"
    path.unlink()
    path.mkdir()
    code, body = cluster.request(holder, "GET", "/images/broken.png")
    assert code == 500 and b"cannot read it" in body, body
    other = 1 + holder % 3
    code, body = cluster.request(other, "GET", "/images/broken.png")
    assert code == 503 and f"node {holder} answered 500".encode() in body, body


def test_highest_id_leads_soon_after_the_last_node_starts(make_cluster) -> None:
    c = make_cluster()
    for node in (3, 1, 2):  # the leader is not the last to start
        c.start(node)
    t0 = time.monotonic()
    assert c.wait_leader(timeout=5) == 3
    elapsed = time.monotonic() - t0
    assert elapsed < 3, f"agreement took {elapsed:.2f}s"
    roles = {n: c.status(n)["role"] for n in (1, 2, 3)}
    assert roles == {1: "follower", 2: "follower", 3: "leader"}
    became = "[Node 3] no higher nodes -> becoming coordinator"
    assert became in c.wait_log(3, became)
    announced = "[Node 1] Coordinator announced: 3"
    assert announced in c.wait_log(1, announced)


def test_follower_forwards_and_any_node_serves_the_image(cluster: LocalCluster) -> None:
    data = tagged_png(make_png_parts(10_000), "fwd")
    code, body = cluster.request(1, "PUT", "/images/fwd.png", data)
    assert code == 201, body
    info = orjson.loads(body)
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["bytes"] == len(data)
    holders = stored_everywhere(cluster)["fwd.png"]
    assert [n for n, _ in holders] == [info["node"]]
    assert holders[0][1] == data
    for node in (1, 2, 3):
        code, got = cluster.request(node, "GET", "/images/fwd.png")
        assert code == 200 and got == data
    assert "[LeastLoad] RECORDED: Node" in cluster.wait_log(3, "[LeastLoad] RECORDED: Node")
    assert '✓ Saved image to "' in cluster.wait_log(info["node"], '✓ Saved image to "')


def test_hundred_uploads_end_34_33_33_with_exact_bytes(cluster: LocalCluster) -> None:
    names = [f"img-{i:03d}.png" for i in range(100)]
    results = upload_many(cluster, names)
    assert all(status == 201 for status, _ in results.values())
    where = stored_everywhere(cluster)
    assert set(where) == set(names)
    for name, holders in where.items():
        assert len(holders) == 1, f"{name} on {[n for n, _ in holders]}"
        assert holders[0][1] == results[name][1]
    counts = sorted((len(cluster.files(n)) for n in (1, 2, 3)), reverse=True)
    assert counts == [34, 33, 33]
    status = cluster.status(3)
    assert {p["id"]: p["assigned"] for p in status["peers"]} == {1: 34, 2: 33, 3: 33}
    # The leader's RECORDED lines count each node's stored images one by one, although ten
    # uploads were under way at a time. The last upload may have gone to any node, so wait
    # for every node's last line before reading the log.
    for node, count in ((1, 34), (2, 33), (3, 33)):
        log = cluster.wait_log(3, f"Node {node} now has {count} total requests")
    recorded: dict[int, list[int]] = {}
    for m in re.finditer(r"RECORDED: Node (\d+) now has (\d+) total requests", log):
        recorded.setdefault(int(m[1]), []).append(int(m[2]))
    assert recorded == {n: list(range(1, c + 1)) for n, c in ((1, 34), (2, 33), (3, 33))}


def test_reupload_is_idempotent_and_conflicts_are_refused(cluster: LocalCluster) -> None:
    a, b = b"\x89PNG\r\n\x1a\nfirst", b"\x89PNG\r\n\x1a\nsecond"
    assert cluster.request(2, "PUT", "/images/same.png", a)[0] == 201
    code, body = cluster.request(1, "PUT", "/images/same.png", a)
    assert code == 200 and orjson.loads(body)["sha256"] == hashlib.sha256(a).hexdigest()
    code, body = cluster.request(3, "PUT", "/images/same.png", b)
    assert code == 409 and orjson.loads(body)["error"] == "conflict"
    holders = stored_everywhere(cluster)["same.png"]
    assert len(holders) == 1 and holders[0][1] == a


def test_post_generates_a_name_from_the_magic_bytes(cluster: LocalCluster) -> None:
    data = tagged_png(make_png_parts(2000), "post")
    code, body = cluster.request(1, "POST", "/images", data)
    assert code == 201
    name = orjson.loads(body)["name"]
    assert name.endswith(".png")
    assert cluster.request(2, "GET", f"/images/{name}") == (200, data)


def test_bad_requests_get_precise_errors_and_store_nothing(make_cluster) -> None:
    c = make_cluster(max_image_bytes=50_000)
    c.start_all()
    c.wait_leader(3)
    assert c.request(1, "PUT", "/images/..%2Fescape", b"x")[0] == 400
    assert c.request(1, "PUT", "/images/.hidden", b"x")[0] == 400
    assert c.request(1, "PUT", "/images/" + "a" * 256, b"x")[0] == 400
    code, body = c.request(1, "PUT", "/images/big.png", b"x" * 50_001)
    assert code == 413 and orjson.loads(body)["error"] == "too large"
    assert c.request(1, "PUT", "/images/ok.png", b"x" * 50_000)[0] == 201
    assert c.request(2, "GET", "/images/missing.png")[0] == 404
    assert c.request(2, "DELETE", "/images/ok.png")[0] == 405
    assert c.request(2, "GET", "/nowhere")[0] == 404
    assert c.request(2, "POST", "/peer/msg", b"{not json")[0] == 401  # unsigned: refused
    assert set(stored_everywhere(c)) == {"ok.png"}
    assert c.wait_leader(3) == 3  # nothing above upset the cluster


def test_status_metrics_healthz(cluster: LocalCluster) -> None:
    cluster.request(1, "PUT", "/images/m.png", b"\x89PNG\r\n\x1a\nm")
    st = cluster.status(2)
    assert st["node_id"] == 2 and st["role"] == "follower" and st["leader"] == 3
    assert st["term"] >= 1
    assert {p["id"] for p in st["peers"]} == {1, 2, 3}
    deadline = time.monotonic() + 3  # heartbeats every 150 ms mark peers alive
    while not all(p["alive"] for p in st["peers"]) and time.monotonic() < deadline:
        time.sleep(0.05)
        st = cluster.status(2)
    assert all(p["alive"] for p in st["peers"]), st["peers"]
    code, text = cluster.request(3, "GET", "/metrics")
    assert code == 200
    assert b'cloudp2p_uploads_total{result="created"} 1.0' in text
    assert b"cloudp2p_is_leader 1.0" in text
    # Refusals are counted from zero, before the first one, so a rate of them works at once.
    assert b'cloudp2p_refused_requests_total{why="client"} 0.0' in text
    assert cluster.request(1, "GET", "/healthz")[0] == 200


def test_config_mismatch_is_reported_loudly(make_cluster) -> None:
    c = make_cluster()
    c.start(1)
    c.start(2)
    # Node 3 runs a config that differs in one setting.
    other = c.workdir / "other.json"
    cfg = orjson.loads(c.config_file.read_bytes())
    cfg["heartbeat_ms"] = 200
    other.write_bytes(orjson.dumps(cfg))
    c.start(3, {"CONFIG_FILE": str(other)})
    c.wait_leader(3)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not c.status(1)["config_mismatch"]:
        time.sleep(0.05)
    assert c.status(1)["config_mismatch"] == [3]
    assert c.status(3)["config_mismatch"] == [1, 2]
    assert "CONFIG MISMATCH" in c.wait_log(1, "CONFIG MISMATCH")


def test_a_read_of_an_image_on_a_down_node_is_503_not_404(cluster: LocalCluster) -> None:
    """While the node that holds an image is down, the others cannot tell it is gone: a
    read answers 503 with Retry-After (the client retries), never a 404 that says the image
    does not exist; once the node is back, the read succeeds."""
    data = b"\x89PNG\r\n\x1a\nheld"
    code, body = cluster.request(3, "PUT", "/images/held.png", data)
    assert code == 201
    holder = orjson.loads(body)["node"]
    other = next(n for n in (1, 2, 3) if n != holder)
    cluster.kill(holder)
    code, body = cluster.request(other, "GET", "/images/held.png")
    assert code == 503 and f"node(s) {holder}" in body.decode(), body
    assert cluster.request(other, "GET", "/images/never-stored.png")[0] == 503
    cluster.start(holder)
    deadline = time.monotonic() + 10
    while cluster.request(other, "GET", "/images/held.png")[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert cluster.request(other, "GET", "/images/held.png") == (200, data)
    assert cluster.request(other, "GET", "/images/never-stored.png")[0] == 404


def test_a_node_back_with_a_wiped_disk_is_reported_and_refilled(cluster: LocalCluster) -> None:
    names = [f"w-{i:02d}.png" for i in range(12)]
    assert all(s == 201 for s, _ in upload_many(cluster, names).values())
    lost = sorted(cluster.files(1))
    assert len(lost) == 4
    cluster.kill(1)
    for name in lost:
        (cluster.shared_dir(1) / name).unlink()  # a new, empty disk
    cluster.start(1)
    said = f"node 1 came back without {len(lost)} image(s) it held ({', '.join(lost[:3])}, ..."
    assert said in cluster.wait_log(3, said, timeout=10)
    # Reads of what it lost say so (every node answered), and the node is refilled first.
    assert cluster.request(2, "GET", f"/images/{lost[0]}")[0] == 404
    again = [f"w-new-{i}.png" for i in range(4)]
    assert all(s == 201 for s, _ in upload_many(cluster, again).values())
    assert sorted(cluster.files(1)) == again
