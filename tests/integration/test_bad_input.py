"""Bad input never crashes a node or corrupts data: raw garbage, fuzzed requests, huge
headers, slowloris and half-open connections, truncated bodies, a connection flood."""

from __future__ import annotations

import http.client
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodesvc.localcluster import LocalCluster

FUZZ_EXAMPLES = 150


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from tests.integration.conftest import free_ports

    c = LocalCluster(tmp_path_factory.mktemp("fuzz"), free_ports(2),
                     {"client_timeout_ms": 1000, "max_connections": 64})
    c.start_all()
    c.wait_leader(2)
    assert c.request(1, "PUT", "/images/keep.png", b"\x89PNG\r\n\x1a\nkeep")[0] == 201
    yield c
    c.stop()


def raw(c: LocalCluster, node: int, data: bytes, wait: float = 2.0) -> bytes:
    with socket.create_connection((c.host, c.ports[node]), timeout=wait) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionError):
            pass
        return b"".join(chunks) if "chunks" in locals() else b""


def healthy(c: LocalCluster) -> None:
    for n in c.ports:
        assert c.request(n, "GET", "/healthz")[0] == 200
    assert c.request(1, "GET", "/images/keep.png") == (200, b"\x89PNG\r\n\x1a\nkeep")


def audit(c: LocalCluster) -> None:
    """No temporary or partial file anywhere; only names the tests meant to store."""
    for n in c.ports:
        for name in c.files(n):
            assert not name.startswith(".tmp-"), name
            assert name == "keep.png" or name.startswith("ok-"), name


@settings(max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2000))
def test_raw_garbage_gets_an_answer_or_a_close(node: LocalCluster, data: bytes) -> None:
    out = raw(node, 1, data)
    if out:
        assert out.startswith(b"HTTP/1.1 ")
        status = int(out[9:12])
        assert status < 500 or status == 505, out[:200]  # 505: not HTTP/1.x


methods = st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS", "BREW"])
paths = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=300),
    st.sampled_from(["/images/", "/images/..", "/images/../../etc/passwd", "/images/%00",
                     "/images/a%2Fb", "/peer/store/x", "/peer/msg", "/status?x=1", "//", "/"]))


@settings(max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=methods, path=paths, body=st.binary(max_size=512))
def test_fuzzed_requests_never_get_a_server_error(node: LocalCluster, method: str, path: str,
                                                 body: bytes) -> None:
    target = path if path.startswith("/") else "/" + path
    conn = http.client.HTTPConnection(node.host, node.ports[2], timeout=5)
    try:
        conn.request(method, target, body=body)
        status = conn.getresponse().status
    except (http.client.HTTPException, ConnectionError):
        return  # the node may refuse to parse it; it must just stay up (checked below)
    finally:
        conn.close()
    if method == "PUT" and target.startswith("/images/") and status in (200, 201):
        name = target[len("/images/"):]
        node.request(1, "GET", f"/images/{name}")  # a valid random name: allowed, audited
        assert status in (200, 201)
        return
    assert status < 500, (method, target, status)


def test_fuzzing_left_the_cluster_healthy_and_clean(node: LocalCluster) -> None:
    healthy(node)
    for n in node.ports:
        for name in node.files(n):
            assert not name.startswith(".tmp-"), name


def test_huge_headers_are_refused_with_431(node: LocalCluster) -> None:
    head = b"GET /status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    out = raw(node, 1, head)
    assert out.startswith(b"HTTP/1.1 431")
    healthy(node)


def test_invalid_names_are_400(node: LocalCluster) -> None:
    for name in ["..", "...", "%2e%2e", "a%00b", ".tmp-x", "x" * 256, "-x", "a/b"]:
        assert node.request(1, "PUT", f"/images/{name}", b"x")[0] in (400, 404), name
    audit(node)


def test_a_truncated_body_stores_nothing(node: LocalCluster) -> None:
    raw(node, 1, b"PUT /images/ok-trunc.png HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                 b"only-ten-b")
    time.sleep(0.2)
    assert all("ok-trunc.png" not in node.files(n) for n in node.ports)
    audit(node)
    healthy(node)


def test_slowloris_and_half_open_connections_are_cut_off(node: LocalCluster) -> None:
    socks = []
    for i in range(30):
        s = socket.create_connection((node.host, node.ports[1]), timeout=5)
        if i % 2:
            s.sendall(b"GET /status HTTP/1.1\r\nHo")  # a head that never ends
        socks.append(s)
    t0 = time.monotonic()
    healthy(node)  # meanwhile real clients are served
    closed = 0
    for s in socks:
        s.settimeout(5)
        try:
            while s.recv(4096):
                pass
            closed += 1
        except TimeoutError:
            pass
        s.close()
    assert closed == len(socks)
    assert time.monotonic() - t0 < 4  # client_timeout_ms is 1 s
    healthy(node)


def test_a_connection_flood_is_capped_and_the_node_recovers(node: LocalCluster) -> None:
    socks = [socket.create_connection((node.host, node.ports[2]), timeout=5) for _ in range(100)]
    refused = 0
    for s in socks[64:]:
        s.settimeout(2)
        try:
            if s.recv(1) == b"":  # hung up on at once, not left waiting for a request
                refused += 1
        except ConnectionResetError:
            refused += 1
        except TimeoutError:
            pass
    assert refused >= 30  # beyond max_connections the node hangs up at once
    for s in socks:
        s.close()
    time.sleep(0.2)
    healthy(node)


def test_a_real_upload_still_works_after_all_that(node: LocalCluster) -> None:
    assert node.request(2, "PUT", "/images/ok-final.png", b"\x89PNG\r\n\x1a\nfinal")[0] == 201
    audit(node)


def test_an_upgrade_request_is_refused_whole_and_stores_nothing(node: LocalCluster) -> None:
    # What `curl --http2` sends. llhttp ends such a message at its head, so it used to be
    # stored as an empty image, answered 201, and followed by a stray 400.
    out = raw(node, 1, b"PUT /images/ok-upgrade.png HTTP/1.1\r\nHost: x\r\n"
                       b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                       b"Content-Length: 5\r\n\r\nabcde")
    assert out.startswith(b"HTTP/1.1 400") and out.count(b"HTTP/1.1 ") == 1, out[:300]
    assert b"upgrades are not supported" in out
    time.sleep(0.2)
    assert all("ok-upgrade.png" not in node.files(n) for n in node.ports)
    assert node.request(2, "PUT", "/images/ok-upgrade.png", b"\x89PNG\r\n\x1a\nup")[0] == 201
    audit(node)


def test_trailers_count_against_the_head_limit(node: LocalCluster) -> None:
    trailers = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 200) for i in range(200))  # 40 KiB
    head = b"PUT /images/ok-trailers.png HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    out = raw(node, 2, head + b"5\r\nabcde\r\n0\r\n" + trailers + b"\r\n")
    assert out.startswith(b"HTTP/1.1 431"), out[:300]
    time.sleep(0.2)
    assert all("ok-trailers.png" not in node.files(n) for n in node.ports)
    audit(node)
    healthy(node)


@pytest.mark.parametrize("request_bytes", [
    b"PUT /images/ok-empty.png HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"PUT /images/ok-empty.png HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PUT /images/ok-empty.png HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /images HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
], ids=["length-0", "no-length", "chunked-empty", "post-empty"])
@pytest.mark.parametrize("at", [1, 2])
def test_an_empty_upload_is_400_and_stores_nothing(node: LocalCluster, request_bytes: bytes,
                                                   at: int) -> None:
    before = {n: set(node.files(n)) for n in node.ports}
    out = raw(node, at, request_bytes)
    assert out.startswith(b"HTTP/1.1 400") and b"empty image" in out, out[:300]
    assert {n: set(node.files(n)) for n in node.ports} == before


def test_head_is_answered_wherever_get_is(node: LocalCluster) -> None:
    for path in ("/status", "/healthz", "/metrics"):
        conn = http.client.HTTPConnection(node.host, node.ports[1], timeout=5)
        try:
            conn.request("HEAD", path)
            resp = conn.getresponse()
            assert resp.status == 200, path
            assert int(resp.headers["content-length"]) > 0 and resp.read() == b"", path
        finally:
            conn.close()


def test_a_kept_alive_connection_must_send_its_next_head_in_time(node: LocalCluster) -> None:
    """After a first request, the connection may idle, but a head once begun must be
    complete within client_timeout_ms (1 s here), as on a fresh connection: else 408."""
    with socket.create_connection((node.host, node.ports[1]), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        time.sleep(1.5)  # idle longer than client_timeout_ms: allowed
        t0 = time.monotonic()
        out = b""
        s.settimeout(0.1)
        for byte in b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 100:
            try:
                s.sendall(bytes([byte]))
                out = s.recv(65536)
            except TimeoutError:
                continue
            except ConnectionError:
                break
            if out or time.monotonic() - t0 > 5:
                break
        took = time.monotonic() - t0
    assert out.startswith(b"HTTP/1.1 408"), out[:300]
    assert 0.9 < took < 3, took


@pytest.mark.parametrize("line", [b"GET /healthz HTTP/2.0", b"GET /healthz"])
def test_only_http_1_is_spoken(node: LocalCluster, line: bytes) -> None:
    out = raw(node, 1, line + b"\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 505") and b"is not supported" in out, out[:300]
    healthy(node)


def test_the_absolute_form_of_a_target_is_the_same_request(node: LocalCluster) -> None:
    """What a proxy sends (RFC 9112 3.2.2: a server must accept it)."""
    base = f"http://{node.host}:{node.ports[1]}".encode()
    out = raw(node, 1, b"GET " + base + b"/images/keep.png HTTP/1.1\r\nHost: x\r\n"
                       b"Connection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"\x89PNG\r\n\x1a\nkeep"), out[:300]
    out = raw(node, 2, b"GET " + base + b"/healthz HTTP/1.1\r\nHost: x\r\n"
                       b"Connection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK"), out[:300]


def test_an_expectation_other_than_100_continue_is_417_and_stores_nothing(
        node: LocalCluster) -> None:
    before = {n: set(node.files(n)) for n in node.ports}
    out = raw(node, 1, b"PUT /images/ok-expect.png HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n"
                       b"Content-Length: 4\r\n\r\nabcd")
    assert out.startswith(b"HTTP/1.1 417 Expectation Failed"), out[:300]
    assert {n: set(node.files(n)) for n in node.ports} == before
    assert node.request(1, "GET", "/images/ok-expect.png")[0] == 404
