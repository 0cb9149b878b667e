"""The stress test's pure parts: sizes, test PNGs, percentiles, balance, the report."""

from __future__ import annotations

import argparse
import struct
import zlib

import pytest

from nodesvc.client import UploadResult, format_status
from nodesvc.config import parse_config
from nodesvc.stress import (
    build_report,
    format_report,
    is_balanced,
    least_load_share,
    make_png_parts,
    parse_size,
    percentile,
    tagged_png,
)

CONFIG = parse_config(b'{"peers": [{"id": 1, "address": "192.0.2.1:7001"},'
                      b'{"id": 2, "address": "192.0.2.2:7002"}]}')


def test_sizes() -> None:
    assert parse_size("64KiB") == 65536
    assert parse_size("4MiB") == 4 * 2**20
    assert parse_size("1000") == 1000
    for bad in ("abc", "10", "-5KiB"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size(bad)


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = [], 8
    while i < len(png):
        (length,) = struct.unpack(">I", png[i:i + 4])
        kind, data = png[i + 4:i + 8], png[i + 8:i + 8 + length]
        (crc,) = struct.unpack(">I", png[i + 8 + length:i + 12 + length])
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF
        out.append((kind, data))
        i += 12 + length
    return out


def test_test_images_are_valid_distinct_pngs_of_the_asked_size() -> None:
    parts = make_png_parts(65536)
    a, b = tagged_png(parts, "a"), tagged_png(parts, "b" * 255)
    assert a != b
    assert len(a) == len(b) == 65536  # what the report says each image is
    found = chunks(a)
    assert [k for k, _ in found] == [b"IHDR", b"tEXt", b"IDAT", b"IEND"]
    width, height = struct.unpack(">II", found[0][1][:8])
    assert len(zlib.decompress(found[2][1])) == height * (1 + width * 3)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99
    assert percentile(values, 100) == 100 and percentile([], 50) == 0


def test_balance() -> None:
    assert is_balanced([34, 33, 33])
    assert not is_balanced([50, 25, 25])
    assert not is_balanced([0, 0, 0])


def test_least_load_share_fills_the_emptiest_first() -> None:
    assert least_load_share({"1": 0, "2": 0, "3": 0}, 100) == {"1": 34, "2": 33, "3": 33}
    assert least_load_share({"1": 90, "2": 90, "3": 90, "4": 0}, 100) == \
        {"1": 3, "2": 3, "3": 2, "4": 92}
    assert least_load_share({"1": 5, "2": 0}, 3) == {"1": 0, "2": 3}


def test_an_uneven_cluster_is_judged_by_its_least_load_share() -> None:
    # A fourth node just added: every upload of the run goes to it, as it should.
    to_new = [result(f"n{i}", 2) for i in range(10)]
    grown = build_report(CONFIG, "r1", 2, 5, 100, to_new, 1.0, [], before={"1": 30, "2": 0})
    assert grown["result"] == "PASS" and grown["summary"]["expected_share"] == {"1": 0, "2": 10}
    assert "the expected share was 0, 10" in format_report(grown)
    # The same run on an even cluster is the imbalance it looks like.
    even = build_report(CONFIG, "r1", 2, 5, 100, to_new, 1.0, [], before={"1": 30, "2": 30})
    assert even["result"] == "FAIL" and even["summary"]["expected_share"] is None
    # And an even split on the uneven cluster is not what least-load placement does.
    split = [result(f"n{i}", 1 + i % 2) for i in range(10)]
    wrong = build_report(CONFIG, "r1", 2, 5, 100, split, 1.0, [], before={"1": 30, "2": 0})
    assert wrong["result"] == "FAIL"


def result(name: str, node: int | None, status: int = 201, sha: str = "s") -> tuple:  # type: ignore[type-arg]
    return (UploadResult(name, status, node, sha if status in (200, 201) else None, 100, 1,
                         5.0, None if status in (200, 201) else "HTTP 503"), "s")


def test_report_passes_only_when_balanced_and_nothing_failed() -> None:
    ok = [result(f"n{i}", 1 + i % 2) for i in range(10)]
    report = build_report(CONFIG, "r1", 2, 5, 100, ok, 1.0, lost=[])
    assert report["result"] == "PASS" and report["distribution"] == {"1": 5, "2": 5}
    assert report["summary"]["throughput_rps"] == 10.0
    text = format_report(report)
    assert "Machine 192.0.2.1 (Node 1): 5 requests" in text and "RESULT: PASS" in text
    failed = build_report(CONFIG, "r1", 2, 5, 100, [*ok[:-1], result("x", None, 503)], 1.0, [])
    assert failed["result"] == "FAIL" and failed["failures"][0]["name"] == "x"
    lost = build_report(CONFIG, "r1", 2, 5, 100, ok, 1.0, lost=["n3"])
    assert lost["result"] == "FAIL" and lost["summary"]["lost"] == 1
    none = build_report(CONFIG, "r1", 2, 5, 100, [result(f"x{i}", None, 401) for i in range(3)],
                        1.0, [])
    assert "FAIL: no upload succeeded" in format_report(none)
    assert "NOT balanced" not in format_report(none)
    corrupt = build_report(CONFIG, "r1", 2, 5, 100, [*ok[:-1], result("c", 2, sha="bad")],
                           1.0, [])
    assert corrupt["result"] == "FAIL" and corrupt["summary"]["corrupted"] == 1


def test_status_table_shows_down_nodes_and_mismatches() -> None:
    peers = {p.id: p for p in CONFIG.peers}
    text = format_status(peers, {
        1: {"role": "leader", "leader": 1, "term": 2, "stored": 5, "config_hash": "a",
            "config_mismatch": []},
        2: "unreachable (refused)"})
    assert "unreachable (refused)" in text and "Leader: node 1" in text
    text = format_status(peers, {
        1: {"role": "leader", "leader": 1, "term": 2, "stored": 5, "config_hash": "a",
            "config_mismatch": [2]},
        2: {"role": "follower", "leader": 1, "term": 2, "stored": 5, "config_hash": "b",
            "config_mismatch": [1]}})
    assert text.count("MISMATCH") == 2
    assert "MISMATCH a" in text and "MISMATCH b" in text  # which node has which config
    text = format_status(peers, {
        1: {"role": "leader", "leader": 1, "term": 2, "stored": 5, "config_hash": "a",
            "config_mismatch": [], "peers": [{"id": 2, "alive": True, "reachable": False}]},
        2: {"role": "follower", "leader": 1, "term": 2, "stored": 5, "config_hash": "a",
            "config_mismatch": [], "peers": [{"id": 1, "alive": True, "reachable": True}]}})
    assert "Link: node 1 cannot reach node 2, whose messages arrive" in text
