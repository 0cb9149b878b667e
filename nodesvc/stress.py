"""The stress test: N clients x M uploads of distinct real PNGs, then the seed's report.

Every upload has its own bytes (a tEXt chunk names it), so each stored file can be checked by
sha256 on its host. Names are `stress-<run_id>-cNN-rNN.png`: the playbook and testinfra look
only at one run's files.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import math
import os
import re
import statistics
import struct
import sys
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import orjson
from tqdm import tqdm

from nodesvc.client import Cluster, UploadResult
from nodesvc.config import Config
from nodesvc.digits import ascii_digits
from nodesvc.storage import sha256_hex

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kib|kb|k|mib|mb|m|gib|g)?\s*$",
                   re.IGNORECASE | re.ASCII)
_UNITS = {None: 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2,
          "mib": 1024**2, "g": 1024**3, "gib": 1024**3}


def parse_size(text: str) -> int:
    """'64KiB' -> 65536; raise argparse.ArgumentTypeError on nonsense."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64KiB, 4MiB, 1000)")
    size = int(float(m.group(1)) * _UNITS[m.group(2).lower() if m.group(2) else None])
    if size < 100:
        raise argparse.ArgumentTypeError("size must be at least 100 bytes (a real PNG)")
    return size


# ---- test images ----------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


class PngParts(NamedTuple):
    """A test PNG without its tEXt chunk, and the size the tagged image should have."""

    head: bytes
    tail: bytes
    size: int


_TEXT_ROOM = 12 + len(b"Comment\x00") + 255  # a tEXt chunk naming the longest valid name


def make_png_parts(size: int, seed: bytes = b"") -> PngParts:
    """A valid RGB PNG, split where a tEXt chunk goes (tagged_png). Pixels are random and
    stored uncompressed, and tagged_png pads the comment, so each image is exactly `size`
    bytes (or the smallest PNG of one row with its tag, if `size` is less than that)."""
    width = 64
    row = 1 + width * 3
    height = max(1, (size - 120 - _TEXT_ROOM) // row)
    rng = os.urandom(height * width * 3) if not seed else (
        (seed * (height * width * 3 // max(1, len(seed)) + 1))[: height * width * 3])
    raw = b"".join(b"\x00" + rng[y * width * 3:(y + 1) * width * 3] for y in range(height))
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                               0, 0, 0))
    tail = _chunk(b"IDAT", zlib.compress(raw, 0)) + _chunk(b"IEND", b"")
    return PngParts(head, tail, size)


def tagged_png(parts: PngParts, tag: str) -> bytes:
    """The image named by `tag` (distinct bytes for every tag), padded to the asked size."""
    text = b"Comment\x00" + tag.encode()
    short = parts.size - (len(parts.head) + len(parts.tail) + 12 + len(text))
    if short > 0:
        text += b" " * short
    return parts.head + _chunk(b"tEXt", text) + parts.tail


# ---- the run --------------------------------------------------------------------------


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + os.urandom(2).hex()


async def run_stress(config: Config, clients: int, requests: int, size: int, run_id: str,
                     progress: bool = False, verify: bool = True,
                     token: bytes | None = None) -> dict[str, object]:
    parts = make_png_parts(size)
    cluster = Cluster(config.peers, pool_size=max(16, clients), token=token)
    await cluster.find_leader()
    infos = await cluster.status_all()
    before = stored_counts(infos)
    silent = {str(n): info for n, info in infos.items() if isinstance(info, str)}
    bar = tqdm(total=clients * requests, unit="req", disable=not progress, file=sys.stderr,
               desc="uploading")
    results: list[tuple[UploadResult, str]] = []

    async def one_client(c: int) -> None:
        for r in range(requests):
            name = f"stress-{run_id}-c{c:02d}-r{r:02d}.png"
            data = tagged_png(parts, name)
            result = await cluster.upload(name, data)
            results.append((result, sha256_hex(data)))
            bar.update(1)

    t0 = time.monotonic()
    await asyncio.gather(*(one_client(c) for c in range(clients)))
    duration = time.monotonic() - t0
    bar.close()
    lost: list[str] = []
    if verify:
        lost = await _verify(cluster, [(r, sha) for r, sha in results if r.ok])
    await cluster.close()
    return build_report(config, run_id, clients, requests, size, results, duration, lost,
                        before, silent)


def stored_counts(infos: dict[int, dict[str, object] | str]) -> dict[str, int] | None:
    """Images each node holds, from their /status; None unless every node answered."""
    counts: dict[str, int] = {}
    for node, info in infos.items():
        stored = info.get("stored") if isinstance(info, dict) else None
        if not isinstance(stored, int):
            return None
        counts[str(node)] = stored
    return counts


def least_load_share(before: dict[str, int], total: int) -> dict[str, int]:
    """How `total` new images spread when each goes to the node holding the fewest (ties to
    the lowest id), as the leader places them: evenly on even nodes, and on an uneven
    cluster (a node just added, or back after missing uploads) the emptiest first."""
    heap = [(count, int(node)) for node, count in before.items()]
    heapq.heapify(heap)
    share = dict.fromkeys(before, 0)
    for _ in range(total if heap else 0):
        count, node = heapq.heappop(heap)
        share[str(node)] += 1
        heapq.heappush(heap, (count + 1, node))
    return share


async def _verify(cluster: Cluster, uploads: list[tuple[UploadResult, str]]) -> list[str]:
    """Read every acknowledged image back; return the names missing or corrupted."""
    sem = asyncio.Semaphore(16)
    bad: list[str] = []

    async def check(result: UploadResult, sha: str) -> None:
        async with sem:
            status, body = await cluster.get(result.name)
        if status != 200 or sha256_hex(body) != sha:
            bad.append(result.name)

    await asyncio.gather(*(check(r, s) for r, s in uploads))
    return sorted(bad)


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def is_balanced(counts: list[int], expected: list[int] | None = None) -> bool:
    """Balanced: the busiest and the idlest node differ by at most 10% of the mean (and at
    least 2 requests of slack, so 34/33/33 passes). Given the share least-load placement
    should give (`least_load_share`, for a cluster that was uneven before the run), each
    node must be that close to its share instead."""
    if not counts or sum(counts) == 0:
        return False
    slack = max(2, math.ceil(0.10 * sum(counts) / len(counts)))
    if expected is not None:
        return all(abs(c - e) <= slack for c, e in zip(counts, expected, strict=True))
    return max(counts) - min(counts) <= slack


def build_report(config: Config, run_id: str, clients: int, requests: int, size: int,
                 results: list[tuple[UploadResult, str]], duration: float,
                 lost: list[str], before: dict[str, int] | None = None,
                 silent: dict[str, str] | None = None) -> dict[str, object]:
    """`before`: the images each node held before the run, if known (see is_balanced);
    `silent`: the nodes that did not answer then, and why."""
    ok = [(r, sha) for r, sha in results if r.ok]
    corrupted = sorted(r.name for r, sha in ok if r.sha256 != sha)
    distribution = {str(p.id): 0 for p in config.peers}
    for r, _ in ok:
        distribution[str(r.node)] = distribution.get(str(r.node), 0) + 1
    counts = list(distribution.values())
    latencies = sorted(r.latency_ms for r, _ in ok)
    total_bytes = sum(r.bytes for r, _ in ok)
    failures = [{"name": r.name, "error": r.error or f"HTTP {r.status}"}
                for r, _ in results if not r.ok]
    failures += [{"name": n, "error": "acknowledged but missing or corrupted on read-back"}
                 for n in lost]
    failures += [{"name": n, "error": "sha256 answered by the node differs from the upload"}
                 for n in corrupted]
    share = least_load_share(before, len(ok)) if before and set(before) == set(distribution) \
        else None
    uneven = share is not None and len(set(before.values())) > 1  # type: ignore[union-attr]
    balanced = is_balanced(counts, [share[n] for n in distribution] if uneven else None)
    summary = {
        "total": len(results), "ok": len(ok), "failed": len(results) - len(ok),
        "lost": len(lost), "corrupted": len(corrupted),
        "duration_s": round(duration, 3),
        "throughput_rps": round(len(ok) / duration, 2) if duration else 0.0,
        "latency_ms": {
            "avg": round(statistics.fmean(latencies), 2) if latencies else 0.0,
            "p50": round(percentile(latencies, 50), 2),
            "p95": round(percentile(latencies, 95), 2),
            "p99": round(percentile(latencies, 99), 2),
            "max": round(latencies[-1], 2) if latencies else 0.0,
        },
        "bandwidth_mib_s": round(total_bytes / duration / 2**20, 2) if duration else 0.0,
        "stddev": round(statistics.pstdev(counts), 2) if counts else 0.0,
        "balanced": balanced,
        "retried": sum(1 for r, _ in ok if r.attempts > 1),
        # What each node held before the run, and the share least-load placement should
        # then give it (judged instead of an even split when the cluster was uneven).
        "stored_before": before,
        "expected_share": share if uneven else None,
        "silent_before": silent or {},
    }
    passed = balanced and not failures
    return {
        "run_id": run_id,
        "config": {"clients": clients, "requests": requests, "size": size,
                   "peers": [{"id": p.id, "address": p.address} for p in config.peers]},
        "uploads": [
            {"name": r.name, "sha256": r.sha256, "node": r.node, "bytes": r.bytes,
             "latency_ms": round(r.latency_ms, 3), "status": r.status, "attempts": r.attempts}
            for r, _ in ok],
        "failures": failures,
        "distribution": distribution,
        "summary": summary,
        "result": "PASS" if passed else "FAIL",
    }


def format_report(report: dict[str, object]) -> str:
    cfg = report["config"]
    s = report["summary"]
    assert isinstance(cfg, dict) and isinstance(s, dict)
    dist = report["distribution"]
    assert isinstance(dist, dict)
    lat = s["latency_ms"]
    bar = "=" * 40
    lines = [bar, "  MULTI-MACHINE LOAD BALANCER STRESS TEST", bar, "", "Machine IPs:"]
    lines += [f"  Node {p['id']}: {p['address']}" for p in cfg["peers"]]
    lines += ["", "Test Configuration:",
              f"  - Concurrent Clients: {cfg['clients']}",
              f"  - Requests per Client: {cfg['requests']}",
              f"  - Total Requests: {cfg['clients'] * cfg['requests']}",
              f"  - Image Size: {cfg['size']} bytes (distinct PNG per request)",
              "", bar, "  LOAD DISTRIBUTION ANALYSIS", bar, "",
              "Distribution across physical machines:"]
    for p in cfg["peers"]:
        host = p["address"].rsplit(":", 1)[0]
        lines.append(f"  Machine {host} (Node {p['id']}): {dist.get(str(p['id']), 0)} requests")
    for node, why in sorted((s.get("silent_before") or {}).items()):
        lines.append(f"  (node {node} did not answer before the run: {why})")
    if s.get("expected_share"):
        before, share = s["stored_before"], s["expected_share"]
        lines.append("  (the nodes held " + ", ".join(f"{before[n]}" for n in sorted(before))
                     + " images before the run: least-load placement fills the emptiest "
                     "first, so the expected share was "
                     + ", ".join(f"{share[n]}" for n in sorted(share)) + ")")
    lines.append("")
    if not s["ok"]:
        lines.append("❌ FAIL: no upload succeeded (the errors are below)")
    elif s["balanced"]:
        lines.append("✅ PASS: Load distribution is balanced across machines")
    else:
        lines.append("❌ FAIL: Load distribution is NOT balanced across machines")
    lines += ["", "Performance:",
              f"  Total requests: {s['total']} ({s['ok']} ok, {s['failed']} failed, "
              f"{s['retried']} retried)",
              f"  Duration: {s['duration_s']:.2f} s",
              f"  Throughput: {s['throughput_rps']:.2f} req/sec",
              f"  Latency: avg {lat['avg']:.1f} ms, p50 {lat['p50']:.1f} ms, "
              f"p95 {lat['p95']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms",
              f"  Bandwidth: {s['bandwidth_mib_s']:.2f} MiB/s",
              f"  Distribution std deviation: ±{s['stddev']:.2f}",
              f"  Lost: {s['lost']}, corrupted: {s['corrupted']}"]
    failures = report["failures"]
    assert isinstance(failures, list)
    for f in failures[:10]:
        lines.append(f"  ! {f['name']}: {f['error']}")
    if len(failures) > 10:
        lines.append(f"  ! ... and {len(failures) - 10} more (see the JSON report)")
    lines += ["", f"RESULT: {report['result']}"]
    return "\n".join(lines)


# ---- the command ----------------------------------------------------------------------


def _positive(text: str) -> int:
    if not ascii_digits(text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=_positive, default=10, help="concurrent clients (10)")
    p.add_argument("--requests", type=_positive, default=10, help="uploads per client (10)")
    p.add_argument("--size", type=parse_size, default=64 * 1024,
                   help="image size, e.g. 64KiB (default), 4MiB")
    p.add_argument("--json", type=Path, help="write the full report (every upload) here")
    p.add_argument("--run-id", help="names are stress-<run-id>-... (default: time + random)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip reading every image back after the run")
    p.add_argument("--quiet", action="store_true", help="print only the RESULT line")


def run_command(config: Config, args: argparse.Namespace, token: bytes | None = None) -> int:
    run_id = args.run_id or new_run_id()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,60}", run_id):
        print(f"cloud-p2p-client: error: bad --run-id {run_id!r}", file=sys.stderr)
        return 2
    if args.size > config.max_image_bytes:
        print(f"cloud-p2p-client: error: --size {args.size} is over the cluster's "
              f"max_image_bytes ({config.max_image_bytes}): every upload would be refused",
              file=sys.stderr)
        return 2
    problem = args.json and _unwritable(args.json)
    if problem:  # found before the run, not after its uploads
        print(f"cloud-p2p-client: error: --json {args.json}: {problem}", file=sys.stderr)
        return 2
    report = asyncio.run(run_stress(config, args.clients, args.requests, args.size, run_id,
                                    progress=sys.stderr.isatty() and not args.quiet,
                                    verify=not args.no_verify, token=token))
    print(format_report(report) if not args.quiet else f"RESULT: {report['result']}")
    if args.json:
        try:
            args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        except OSError as exc:
            print(f"cloud-p2p-client: error: cannot write {args.json}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 2
        print(f"Report: {args.json}")
    return 0 if report["result"] == "PASS" else 1


def _unwritable(path: Path) -> str | None:
    """Why the report could not be written to `path` (its folder is made if missing)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot make its folder: {exc.strerror or exc}"
    if path.is_dir():
        return "is a directory"
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        return "not writable"
    return None

