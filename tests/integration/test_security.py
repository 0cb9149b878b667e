"""Peer authentication and the client token on a real loopback cluster."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import orjson

from nodesvc.auth import PeerAuth
from nodesvc.election import Kind, Message
from nodesvc.localcluster import LocalCluster


def forged(kind: Kind, sender: int, term: int) -> bytes:
    return orjson.dumps(Message(kind, sender, term, sender).to_dict())


def test_a_forged_coordinator_from_outside_does_not_change_the_leader(
        cluster: LocalCluster) -> None:
    # An outside process claims, as node 1 and with a huge term, to be the coordinator.
    for node in (1, 2, 3):
        code, body = cluster.request(node, "POST", "/peer/msg",
                                     forged(Kind.COORDINATOR, 1, 10_000))
        assert code == 401 and b"missing peer signature" in body
        code, _ = cluster.request(node, "POST", "/peer/msg", forged(Kind.COORDINATOR, 1, 10_000),
                                  headers={"x-cloud-p2p-auth": "1:0:ab:cd"})
        assert code == 401
    time.sleep(0.5)
    assert cluster.wait_leader(3, timeout=2) == 3
    assert all(cluster.status(n)["term"] < 10_000 for n in (1, 2, 3))
    # Nor can it store behind the leader's back, or read a node's private listing.
    assert cluster.request(1, "PUT", "/peer/store/evil.png", b"x")[0] == 401
    assert cluster.request(1, "GET", "/peer/names")[0] == 401
    assert cluster.request(2, "PUT", "/images/evil.png", b"x",
                           headers={"x-cloud-p2p-forwarded": "1"})[0] == 401
    assert all("evil.png" not in cluster.files(n) for n in (1, 2, 3))
    _, metrics = cluster.request(1, "GET", "/metrics")
    refused = re.search(rb'cloudp2p_refused_requests_total\{why="peer"\} (\S+)', metrics)
    assert refused is not None and float(refused[1]) >= 2  # the forged store and listing


def test_only_images_may_be_signed_over_their_head(cluster: LocalCluster) -> None:
    # A head-only signature (what the leader sends with an image) made with the real secret:
    # the storing node accepts it and hashes the image itself; an election message signed
    # that way is refused, since its body would not be covered.
    assert cluster.secret_file is not None
    me = PeerAuth(cluster.secret_file.read_text().strip().encode(), 1)
    path = "/peer/store/head-signed.png"
    code, body = cluster.request(2, "PUT", path, b"image bytes",
                                 headers={"x-cloud-p2p-auth": me.sign("PUT", path,
                                                                      head_only=True)})
    assert code == 201
    assert orjson.loads(body)["sha256"] == hashlib.sha256(b"image bytes").hexdigest()
    msg = forged(Kind.COORDINATOR, 1, 10_000)
    code, body = cluster.request(2, "POST", "/peer/msg", msg,
                                 headers={"x-cloud-p2p-auth": me.sign("POST", "/peer/msg",
                                                                      head_only=True)})
    assert code == 401 and b"signed over its body" in body
    assert all(cluster.status(n)["term"] < 10_000 for n in (1, 2, 3))


def test_a_node_with_another_secret_cannot_join(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster()
    c.start(1)
    c.start(2)
    other = c.workdir / "other.secret"
    other.write_text(os.urandom(32).hex())
    other.chmod(0o600)
    c.start(3, {"CLUSTER_SECRET_FILE": str(other)})  # would lead if it were believed
    assert c.wait_leader(2, nodes=[1, 2], timeout=5) == 2
    time.sleep(1.0)
    assert c.leaders([1, 2]) == {1: 2, 2: 2}
    assert "bad peer signature" in c.wait_log(1, "bad peer signature")
    # Node 3 leads itself, but every peer refuses it: unhealthy, and it says why. Nodes 1 and
    # 2, which believe each other, stay healthy although node 3 refuses them too.
    code, body = c.request(3, "GET", "/healthz")
    assert code == 503, body
    assert set(orjson.loads(body)["refused_by"]) == {"1", "2"}, body
    assert b"bad peer signature" in body
    assert [c.request(n, "GET", "/healthz")[0] for n in (1, 2)] == [200, 200]


def test_uploads_need_the_client_token_when_one_is_set(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster()
    token = c.workdir / "client.token"
    token.write_text("t" * 32)
    token.chmod(0o600)
    for node in (1, 2, 3):
        c.start(node, {"CLIENT_TOKEN_FILE": str(token)})
    c.wait_leader(3)
    code, body = c.request(1, "PUT", "/images/a.png", b"png")
    assert code == 401 and b"Bearer" in body
    assert c.request(1, "PUT", "/images/a.png", b"png",
                     headers={"authorization": "Bearer wrong"})[0] == 401
    assert c.request(1, "PUT", "/images/a.png", b"png",
                     headers={"authorization": "Bearer " + "t" * 32})[0] == 201
    assert c.request(2, "GET", "/images/a.png") == (200, b"png")  # reads stay open
    # The client says what is missing, and sends the token it is given.
    exe = str(Path(sys.executable).with_name("cloud-p2p-client"))
    img = c.workdir / "b.png"
    img.write_bytes(b"png b")
    cfg = ["--config", str(c.config_file)]
    without = subprocess.run([exe, *cfg, "upload", str(img)], capture_output=True, text=True,
                             timeout=30)
    assert without.returncode == 1 and "--token-file" in without.stderr
    given = subprocess.run([exe, *cfg, "--token-file", str(token), "upload", str(img)],
                           capture_output=True, text=True, timeout=30)
    assert given.returncode == 0 and "b.png: stored on node" in given.stdout, given.stderr


def test_a_peer_whose_clock_is_off_is_named_with_its_offset_once_a_minute(
        cluster: LocalCluster) -> None:
    """Signed with the right secret by a clock 90 s ahead: refused, and the log says whose
    clock and by how much, once, however many such messages come (a node out of sync sends
    several a second)."""
    assert cluster.secret_file is not None
    ahead = PeerAuth(cluster.secret_file.read_text().strip().encode(), 1,
                     clock=lambda: time.time() + 90)
    for _ in range(10):
        body = forged(Kind.HEARTBEAT, 1, 1)
        code, answer = cluster.request(2, "POST", "/peer/msg", body, headers={
            "x-cloud-p2p-auth": ahead.sign("POST", "/peer/msg", body)})
        assert code == 401 and b"node 1's clock reads +90" in answer, answer
    time.sleep(0.3)  # (the log is written in batches)
    log = cluster.wait_log(2, "outside the time window")
    lines = [x for x in log.splitlines() if "outside the time window" in x]
    assert len(lines) == 1 and "node 1's clock reads +90" in lines[0], lines


def test_an_unsigned_peer_request_gets_a_proper_401(cluster: LocalCluster) -> None:
    import http.client

    conn = http.client.HTTPConnection(cluster.host, cluster.ports[1], timeout=5)
    try:
        conn.request("GET", "/peer/index")
        resp = conn.getresponse()
        resp.read()
        assert (resp.status, resp.reason) == (401, "Unauthorized")
        assert resp.headers["www-authenticate"] == "CloudP2P-Peer"
    finally:
        conn.close()
