"""CPU per upload on loopback, for quick A/B of code changes without the lab.

    sudo .venv/bin/python -m bench.loopcpu [--size 64KiB] [--clients 64] [--seconds 6]
        [--rev HASH] [--rounds 3] [--idle]

Starts a three-node cluster on 127.0.0.1 (LocalCluster) whose shared directories are on a
freshly made ext4 filesystem (a loop-mounted file under /var/tmp, made again for every run:
the host's own filesystem carries the "recently deleted inode" cost of earlier runs, see the
README's Benchmarks), drives the leader with wrk for `--seconds`, and prints req/s, p50/p99,
each node's user and system CPU per upload, the machine's busy time per upload and each
node's mean batch size (writes per group commit). With --rev, the same run is made for that
git revision too (its nodesvc from `git archive`, on PYTHONPATH), alternating with this
tree's for --rounds rounds, so that a slow minute on a shared machine hits both. With --idle
it measures instead what an idle cluster costs: CPU per node over 15 s after the election.
Needs root (mount) and wrk (scripts/install-bench-deps).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from bench.compare import SIZES
from bench.cpu import cell_parser, cpu_seconds, machine_busy
from bench.lab_limits import sha256_ms_per_mib
from bench.loopback import free_ports
from bench.wrk import run_wrk
from nodesvc.localcluster import LocalCluster

ROOT = Path(__file__).resolve().parents[1]
MOUNT = Path("/mnt/cloud-p2p-loopcpu")
IMAGE = Path("/var/tmp/cloud-p2p-loopcpu.img")


@contextlib.contextmanager
def fresh_filesystem() -> Iterator[Path]:
    """A new 8 GiB ext4 (with its journal, as on a real host), mounted and then removed."""
    MOUNT.mkdir(parents=True, exist_ok=True)
    subprocess.run(["truncate", "-s", "8G", str(IMAGE)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(IMAGE)], check=True)
    subprocess.run(["mount", "-o", "loop", str(IMAGE), str(MOUNT)], check=True)
    try:
        yield MOUNT
    finally:
        subprocess.run(["umount", str(MOUNT)], check=False)
        IMAGE.unlink(missing_ok=True)


@contextlib.contextmanager
def source_tree(rev: str | None) -> Iterator[Path]:
    """This checkout, or `rev`'s files in a temporary directory."""
    if rev is None:
        yield ROOT
        return
    with tempfile.TemporaryDirectory(prefix="cloud-p2p-rev-") as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield Path(tmp)


def cluster(workdir: Path, src: Path) -> LocalCluster:
    """Three nodes running `src`'s nodesvc (LocalCluster hands its children our environment)."""
    os.environ["PYTHONPATH"] = str(src)
    return LocalCluster(workdir, free_ports(3))


def batch_sizes(ports: dict[int, int]) -> dict[int, float]:
    sizes = {}
    for node, port in ports.items():
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        values = {line.split()[0]: float(line.split()[1]) for line in text.decode().splitlines()
                  if line.startswith("cloudp2p_disk_commit")}
        commits = values.get("cloudp2p_disk_commits", 0.0)
        sizes[node] = values.get("cloudp2p_disk_committed_writes", 0.0) / commits if commits \
            else 0.0
    return sizes


def one_run(label: str, src: Path, size: int, clients: int, seconds: float) -> None:
    with fresh_filesystem() as fs, cluster(fs / "cluster", src) as c:
        c.start_all()
        c.wait_leader(3, timeout=15)
        pids = {n: p.pid for n, p in c.procs.items()}
        port = c.ports[3]
        run_wrk("127.0.0.1", port, size, clients, 2, "warm")
        before = {n: cpu_seconds(p) for n, p in pids.items()}
        busy = machine_busy()
        r = run_wrk("127.0.0.1", port, size, clients, seconds, "run")
        busy = machine_busy() - busy
        ok = max(1, int(r["ok"]))
        cpu = {n: [(a - b) / ok * 1000 for a, b in zip(cpu_seconds(p), before[n], strict=True)]
               for n, p in pids.items()}
        batches = batch_sizes(c.ports)
    nodes = "  ".join(f"n{n} {u:.3f}/{s:.3f}" for n, (u, s) in cpu.items())
    print(f"{label:12} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:6.1f}  p99 {r['p99_ms']:6.1f} ms  "
          f"user/sys ms per upload: {nodes}  machine {busy / ok * 1000:.3f} ms  "
          f"batch {'/'.join(f'{b:.1f}' for b in batches.values())}  failed {r['failed']:.0f}",
          flush=True)


def idle_run(label: str, src: Path, seconds: float = 15.0) -> None:
    with tempfile.TemporaryDirectory(prefix="cloud-p2p-idle-") as tmp, \
            cluster(Path(tmp), src) as c:
        c.start_all()
        c.wait_leader(3, timeout=15)
        time.sleep(2)
        before = {n: cpu_seconds(p.pid) for n, p in c.procs.items()}
        time.sleep(seconds)
        used = [sum(cpu_seconds(p.pid)) - sum(before[n]) for n, p in c.procs.items()]
    print(f"{label:12} idle: {sum(used) / len(used) / seconds * 100:.1f}% of a core per node",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    p = cell_parser(__doc__, seconds=6.0)
    p.add_argument("--rev", help="also measure this git revision, alternating with this tree")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--idle", action="store_true", help="measure an idle cluster's CPU instead")
    args = p.parse_args(argv)
    if os.geteuid() != 0 and not args.idle:
        p.error("needs root to mount the test filesystem")
    print(f"this machine's SHA-256: {sha256_ms_per_mib()} ms per MiB", flush=True)
    for _ in range(args.rounds):
        for rev in ([args.rev] if args.rev else []) + [None]:
            with source_tree(rev) as src:
                label = rev or "this tree"
                if args.idle:
                    idle_run(label, src)
                else:
                    one_run(label, src, SIZES[args.size], args.clients, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
