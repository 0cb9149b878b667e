"""Where the CPU goes: CPU time per upload of each server process while wrk drives the lab.

    sudo .venv/bin/python -m bench.cpu [--size 64KiB] [--clients 64] [--seconds 10]
        [--target cloud-p2p|peer]

Reads utime/stime of every cloud-p2p node (and nginx, HAProxy and journald) from /proc before
and after one wrk cell, and the whole machine's busy time from /proc/stat, and prints each
divided by the uploads that succeeded. The lab's hosts are containers on this machine, so their
processes are visible here. Run it after a deploy (and, for --target peer, bench.compare's
peer set-up).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench.compare import SIZES, leader_address
from bench.wrk import run_wrk
from cloudlab.cli import existing_hosts

T = TypeVar("T")
CLOUD_P2P = "/opt/cloud-p2p/venv/bin/cloud-p2p"
WATCHED = (CLOUD_P2P, "nginx: worker", "haproxy", "systemd-journald")


def watched_pids() -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        name = next((w for w in WATCHED if w in cmd), None)
        if name is not None:
            found[int(entry.name)] = name
    return found


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / hz, int(fields[12]) / hz


def machine_busy() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


@dataclass
class CpuUse:
    """CPU-seconds spent while a cell ran: per watched process, and by the whole machine."""

    processes: dict[int, tuple[str, float, float]]  # pid -> (name, user, system)
    machine: float

    def per_upload_ms(self, uploads: float, name: str | None = None) -> tuple[float, float]:
        """(user, system) ms per upload of the processes called `name` (default: all)."""
        picked = [(u, s) for n, u, s in self.processes.values() if name in (None, n)]
        n = max(1.0, uploads)
        return (sum(u for u, _ in picked) / n * 1000, sum(s for _, s in picked) / n * 1000)


def measure(run: Callable[[], T]) -> tuple[T, CpuUse]:
    """Run `run()` (one load cell); return its result and the CPU time every watched process
    and the whole machine spent meanwhile."""
    pids = watched_pids()
    before = {pid: cpu_seconds(pid) for pid in pids}
    busy0 = machine_busy()
    result = run()
    busy = machine_busy() - busy0
    used = {}
    for pid, name in pids.items():
        try:
            user, system = (a - b for a, b in zip(cpu_seconds(pid), before[pid], strict=True))
        except OSError:
            continue  # it exited meanwhile
        used[pid] = (name, user, system)
    return result, CpuUse(used, busy)


def cell_parser(doc: str | None, seconds: float) -> argparse.ArgumentParser:
    """A bench tool's parser with the options of its one wrk cell."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=list(SIZES), default="64KiB")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=seconds)
    return p


def main(argv: list[str] | None = None) -> int:
    p = cell_parser(__doc__, seconds=10.0)
    p.add_argument("--target", choices=("cloud-p2p", "peer"), default="cloud-p2p")
    args = p.parse_args(argv)
    if not existing_hosts():
        p.error("no lab: python -m cloudlab up, then deploy")
    host, port = leader_address() if args.target == "cloud-p2p" \
        else (existing_hosts()[0].address, 8000)
    cell, use = measure(lambda: run_wrk(host, port, SIZES[args.size], args.clients,
                                        args.seconds, f"cpu-{time.time_ns()}"))
    uploads = max(1, int(cell["ok"]))
    print(f"{cell['ok']:.0f} uploads of {args.size} at {cell['rps']:.0f}/s "
          f"({args.clients} clients, wrk)\n")
    print(f"{'process':36} {'pid':>7} {'user ms':>8} {'sys ms':>8}  per upload")
    for pid, (name, user, system) in sorted(use.processes.items()):
        if user + system >= 0.05:
            print(f"{name:36} {pid:>7} {user / uploads * 1000:>8.3f} "
                  f"{system / uploads * 1000:>8.3f}")
    print(f"\nthe whole machine: {use.machine / uploads * 1000:.2f} ms of CPU per upload "
          f"({use.machine:.1f} CPU-seconds in {args.seconds:g} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
