"""The leader passes an upload on to its target as it arrives: a client that breaks off
mid-body leaves nothing behind, chunked and oversized bodies are handled, and the bytes that
land are exactly the ones sent."""

from __future__ import annotations

import socket
import time

from nodesvc.localcluster import LocalCluster


def leader_socket(c: LocalCluster) -> socket.socket:
    return socket.create_connection((c.host, c.ports[3]), timeout=5)


def everywhere(c: LocalCluster) -> list[str]:
    return sorted(name for n in c.ports for name in c.files(n))


def answer(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_client_breaking_off_mid_body_leaves_nothing_and_no_lock(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster(3, max_image_bytes=8 << 20)
    c.start_all()
    assert c.wait_leader(3) == 3
    for i in range(3):  # some images first, so the leader places the next one on a peer
        assert c.request(3, "PUT", f"/images/first{i}.png", b"\x89PNG" + bytes([i]))[0] == 201
    before = everywhere(c)
    with leader_socket(c) as s:
        s.sendall(b"PUT /images/cut.png HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n")
        s.sendall(b"\x89PNG" + b"a" * (1 << 20))  # a quarter, then the client is gone
        time.sleep(0.3)
    time.sleep(0.5)
    assert everywhere(c) == before  # no image and no temporary file on any node
    data = b"\x89PNG" + b"b" * 300_000
    assert c.request(3, "PUT", "/images/cut.png", data)[0] == 201  # nothing left locked
    assert c.request(1, "GET", "/images/cut.png") == (200, data)


def test_a_chunked_upload_lands_whole_and_an_oversized_one_is_413(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster(3, max_image_bytes=1 << 20)
    c.start_all()
    assert c.wait_leader(3) == 3
    for k in range(6):  # placed 2/2/2: four of them on another node than the leader
        pieces = [bytes([k + i]) * (100_000 + i) for i in range(5)]
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        with leader_socket(c) as s:
            s.sendall(b"PUT /images/chunky%d.png HTTP/1.1\r\nHost: x\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n" % k + chunked)
            assert answer(s).startswith(b"HTTP/1.1 201")
        status, got = c.request(1, "GET", f"/images/chunky{k}.png")
        assert status == 200 and got == b"".join(pieces)
    metrics = c.request(3, "GET", "/metrics")[1].decode()
    streamed = next(float(line.split()[1]) for line in metrics.splitlines()
                    if line.startswith("cloudp2p_streamed_uploads_total"))
    assert streamed >= 1  # passed on while the client was still sending

    big = bytes(300_000)
    with leader_socket(c) as s:  # no Content-Length: only counting the chunks can stop it
        s.sendall(b"PUT /images/huge.png HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(5):
                s.sendall(b"%x\r\n%s\r\n" % (len(big), big))
        except ConnectionError:
            pass  # the node may close on us as soon as it has answered
        assert answer(s).startswith(b"HTTP/1.1 413")
    time.sleep(0.3)
    assert "huge.png" not in everywhere(c)
    assert not any(n.startswith(".tmp-") for n in everywhere(c))
