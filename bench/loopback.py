"""Benchmark: a three-node cluster on loopback (the seed's single-machine mode).

    .venv/bin/python bench/loopback.py [--json reports/bench-loopback.json]

Prints a table of figures; asserts nothing (speed goals live here, not in tests). Every
upload is fsynced (file and directory) before its 201, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import orjson

from nodesvc.config import load_config
from nodesvc.localcluster import LocalCluster
from nodesvc.stress import run_stress

SCENARIOS = [  # (label, clients, requests per client, bytes)
    ("seed 10x10 @64KiB", 10, 10, 64 * 1024),
    ("1000 @64KiB (10x100)", 10, 100, 64 * 1024),
    ("100 @4MiB (10x10)", 10, 10, 4 * 1024 * 1024),
]


def free_ports(n: int) -> list[int]:
    import socket
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", type=Path, default=Path("reports/bench-loopback.json"))
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cp2p-bench-") as tmp, \
            LocalCluster(Path(tmp), free_ports(3)) as cluster:
        for node in (1, 2, 3):
            cluster.start(node)
        t0 = time.monotonic()
        cluster.wait_leader(3, timeout=15)
        election = time.monotonic() - t0
        config = load_config(cluster.config_file)
        for label, clients, requests, size in SCENARIOS:
            report = asyncio.run(run_stress(config, clients, requests, size,
                                            f"bench{len(rows)}", verify=False))
            s = report["summary"]
            rows.append({"scenario": label, "ok": s["ok"], "failed": s["failed"],
                         "rps": s["throughput_rps"], "mib_s": s["bandwidth_mib_s"],
                         "p50_ms": s["latency_ms"]["p50"], "p99_ms": s["latency_ms"]["p99"],
                         "distribution": report["distribution"], "result": report["result"]})
    print(f"leader agreed {election * 1000:.0f} ms after the last node started\n")
    head = f"{'scenario':24} {'ok':>5} {'req/s':>8} {'MiB/s':>7} {'p50 ms':>7} {'p99 ms':>7}  dist"
    print(head)
    print("-" * len(head))
    for r in rows:
        dist = "/".join(str(v) for v in r["distribution"].values())
        print(f"{r['scenario']:24} {r['ok']:>5} {r['rps']:>8.1f} {r['mib_s']:>7.1f} "
              f"{r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f}  {dist}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(orjson.dumps({"election_ms": round(election * 1000), "rows": rows},
                                       option=orjson.OPT_INDENT_2))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
