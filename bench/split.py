"""Where each upload's CPU goes, cloud-p2p beside HAProxy + nginx: user space, kernel,
logging and the rest of the machine, cell by cell, in one run.

    sudo .venv/bin/python -m bench.split [--cells 64KiB:10,64KiB:64,1MiB:10,1MiB:64]
        [--durability fsync,none] [--seconds 10] [--json reports/split.json]

Needs a lab started with `cloudlab up --image bench` (nginx and HAProxy installed). For each
durability it deploys cloud-p2p with it (bench.compare.deploy, a rolling re-deploy), sets the
peer up (bench.compare.setup_peer) and runs every cell with wrk against both, cloud-p2p first,
each cell on a written-out disk and followed by a timed `sync` (the write-back it left); the
images stay (see bench.compare.make_room: they are wiped only when less than 30 GiB is free,
and all eight default cells of both durabilities write about 50 GiB). The
lab's hosts are containers on this machine, so every server process and journald is read
from /proc (bench.cpu.measure); "rest" is whatever else the machine did meanwhile: wrk, the
kernel's flusher and network threads, sshd.

The machine is 85-100% busy in every cell, so uploads per second follow CPU per upload; the
split says which part of the difference is the servers' user space (the interpreter, for
cloud-p2p), which the kernel's work on their behalf (copies, the network path, the disk) and
which the log lines journald stores.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench.changes import parse_cells
from bench.compare import (
    PEER_SYSTEM,
    SIZES,
    deploy,
    durable_rate,
    flush_disk,
    leader_address,
    make_room,
    setup_peer,
)
from bench.cpu import CLOUD_P2P, CpuUse, measure
from bench.wrk import run_wrk
from cloudlab.cli import existing_hosts

ROOT = Path(__file__).resolve().parents[1]
PEER_PROCESSES = ("nginx: worker", "haproxy")
JOURNALD = "systemd-journald"
PARTS = ("user", "kernel", "journald", "rest")


def split(use: CpuUse, uploads: float, servers: tuple[str, ...]) -> dict[str, float]:
    """CPU ms per upload: the servers' user space and kernel time, journald's, the rest of the
    machine, and the machine's total (the four parts add up to it)."""
    n = max(1.0, uploads)
    user = sum(u for name, u, _ in use.processes.values() if name in servers)
    kernel = sum(s for name, _, s in use.processes.values() if name in servers)
    journald = sum(u + s for name, u, s in use.processes.values() if name == JOURNALD)
    rest = max(0.0, use.machine - user - kernel - journald)
    ms = {"user": user, "kernel": kernel, "journald": journald, "rest": rest,
          "machine": use.machine}
    return {k: round(v / n * 1000, 3) for k, v in ms.items()}


def gap(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, float]:
    """How much more CPU per upload cloud-p2p spent than the peer, part by part (ms), and
    the throughput ratio."""
    out = {part: round(ours["cpu_ms"][part] - peer["cpu_ms"][part], 3)
           for part in (*PARTS, "machine")}
    out["ratio_to_peer"] = round(ours["rps"] / peer["rps"], 2) if peer["rps"] else 0.0
    return out


def run_cell(system: str, address: tuple[str, int], size_name: str, clients: int,
             seconds: float, servers: tuple[str, ...]) -> dict[str, Any]:
    host, port = address
    flush_disk()
    tag = f"split-{system.split()[0]}-{size_name}-{clients}-{time.time_ns()}"
    cell, use = measure(lambda: run_wrk(host, port, SIZES[size_name], clients, seconds, tag))
    writeback = round(flush_disk(), 3)
    row = {"system": system, "size": size_name, "clients": clients, **cell,
           "writeback_s": writeback,
           "durable_rps": durable_rate(int(cell["ok"]), cell["rps"], writeback),
           "cpu_ms": split(use, cell["ok"], servers)}
    c = row["cpu_ms"]
    print(f"{system:20} {size_name:>6} x{clients:<3} {cell['rps']:>8.1f} req/s   CPU ms per "
          f"upload: user {c['user']:.3f}  kernel {c['kernel']:.3f}  journald "
          f"{c['journald']:.3f}  rest {c['rest']:.3f}  machine {c['machine']:.3f}; "
          f"write-back after {writeback:.2f} s", flush=True)
    return row


def add_gaps(rows: list[dict[str, Any]]) -> None:
    """Give each cloud-p2p row its gap to the peer's row measured right after it (the order
    main runs them in): a cell given twice in --cells is compared with its own peer cell,
    not with the other one's."""
    for ours, peer in itertools.pairwise(rows):
        if ours["system"] != PEER_SYSTEM and peer.get("paired_with") == ours["system"] \
                and (peer["size"], peer["clients"]) == (ours["size"], ours["clients"]):
            ours["gap"] = gap(ours, peer)


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\ncloud-p2p minus the peer, CPU ms per upload (the ratio is uploads/s)")
    print(f"{'system':20} {'cell':>10} {'ratio':>6} " + "".join(f"{p:>10}" for p in PARTS)
          + f"{'machine':>10}")
    for r in rows:
        if "gap" not in r:
            continue
        d = r["gap"]
        print(f"{r['system']:20} {r['size'] + ' x' + str(r['clients']):>10} "
              f"{d['ratio_to_peer']:>6.2f} " + "".join(f"{d[p]:>+10.3f}" for p in PARTS)
              + f"{d['machine']:>+10.3f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.split", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=parse_cells,
                   default=parse_cells("64KiB:10,64KiB:64,1MiB:10,1MiB:64"))
    p.add_argument("--durability", default="fsync,none",
                   help="comma list of fsync and none (default: both)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--json", type=Path, default=ROOT / "reports" / "split.json")
    args = p.parse_args(argv)
    given = args.durability
    args.durability = [d.strip() for d in given.split(",") if d.strip()]
    if not args.durability or set(args.durability) - {"fsync", "none"}:
        p.error(f"--durability: a comma list of fsync and none, not {given!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not existing_hosts():
        print("no lab: python -m cloudlab up --image bench", file=sys.stderr)
        return 2
    setup_peer()
    lab = existing_hosts()
    rows: list[dict[str, Any]] = []
    for durability in args.durability:
        system = "cloud-p2p fsync" if durability == "fsync" else "cloud-p2p no-fsync"
        deploy(durability)
        for size_name, clients in args.cells:
            make_room()  # a 1 MiB cell pair writes about 8 GiB: wipe before the disk runs out
            rows.append(run_cell(system, leader_address(), size_name, clients, args.seconds,
                                 (CLOUD_P2P,)))
            peer = run_cell(PEER_SYSTEM, (lab[0].address, 8000), size_name, clients,
                            args.seconds, PEER_PROCESSES)
            rows.append({**peer, "paired_with": system})
    if args.durability[-1] != "fsync":
        deploy("fsync")  # the lab as the tests and the other benchmarks expect it
    add_gaps(rows)
    print_table(rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(orjson.dumps({"rows": rows}, option=orjson.OPT_INDENT_2))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
