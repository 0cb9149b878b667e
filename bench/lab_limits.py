"""The lab's own limits, the yardstick for every throughput figure (issue 5 groundwork).

    sudo .venv/bin/python -m bench.lab_limits [--json reports/lab-limits.json] [--store]

Needs a running lab (python -m cloudlab up). Measures, between real lab hosts:
- raw TCP throughput from h1 to h2 (one connection, 1 MiB writes, 512 MiB),
- the disk's durable write rate: 4 KiB, 64 KiB and 1 MiB images each written + fsynced + its
  directory fsynced (an image stored on its own, no batching), by 1, 8 and 64 writers, for a
  few seconds each on a settled disk (bench/probes/fsync_rate.py). "durable_by_size" has all
  of them; "durable_writes_per_s" the 64 KiB ones.
- how fast the machine computes that day (SHA-256, ms per MiB: "cpu_sha256_ms_per_mib"),
- with --store (needs a deploy; bench.compare does it after deploying), cloud-p2p's own
  durable write path on h1 (its store and group commit, no network, no HTTP), in cells
  alternating with the disk's one-by-one rate under the same conditions: "store_by_size" and
  "store_disk_by_size" (the disk's rate from that same run), 8 and 64 writers.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shlex
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from cloudlab import hosts
from cloudlab.plan import HostPlan

PORT = 9000
DEPLOYED_PYTHON = "/opt/cloud-p2p/venv/bin/python"
PROBES = Path(__file__).resolve().parent / "probes"
CELL_SECONDS = 2.0   # per cell of a disk probe: long enough to outlast the disk's cache bursts
STORE_ROUNDS = 2     # store and disk cells alternate this many times; medians are kept

Rates = dict[str, dict[str, float]]  # size in bytes -> writers -> writes per second


def sha256_ms_per_mib(mib: int = 64, tries: int = 3) -> float:
    """How fast this machine computes right now: ms per MiB of SHA-256 (best of `tries`).
    The same kind of machine gave 0.59 one day and 1.4-3.1 another; figures of runs on
    different days compare only next to this."""
    data = b"\x5a" * (mib << 20)
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        hashlib.sha256(data).digest()
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000 / mib, 3)


def run_probe(h: HostPlan, probe: str, *args: str, timeout: float = 300,
              python: str = "python3") -> str:
    """Run bench/probes/`probe` on a lab host: the probes directory is sent over SSH (so a probe
    can import another) into a temporary directory that is removed afterwards."""
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        for f in sorted(PROBES.glob("*.py")):
            t.add(f, arcname=f.name)
    remote = (f"d=$(mktemp -d) && tar -x -C \"$d\" && cd \"$d\" && "
              f"{shlex.join([python, probe, *args])}; rc=$?; rm -rf \"$d\"; exit $rc")
    cmd = ["ssh", *hosts.SSH_OPTS, "-i", str(hosts.KEY), f"root@{h.address}", remote]
    r = subprocess.run(cmd, input=tar.getvalue(), capture_output=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{h.name} {probe}: {r.stderr.decode(errors='replace')[-300:]}")
    return r.stdout.decode()


def disk_rates(h: HostPlan) -> Rates:
    return _rates(run_probe(h, "fsync_rate.py", "/var/lib/cloud-p2p-bench", str(CELL_SECONDS)))


def store_rates(h: HostPlan) -> tuple[Rates, Rates]:
    """(cloud-p2p's store, the disk one by one) in writes per second on `h`, same run."""
    out = run_probe(h, "store_rate.py", "/var/lib/cloud-p2p-bench-store", str(CELL_SECONDS),
                    str(STORE_ROUNDS), python=DEPLOYED_PYTHON, timeout=600)
    return _rates(out, column=2), _rates(out, column=3)


def _rates(probe_output: str, column: int = 2) -> Rates:
    """"size writers rate..." lines -> {size: {writers: the rate in `column`}}."""
    by_size: Rates = {}
    for line in probe_output.splitlines():
        fields = line.split()
        by_size.setdefault(fields[0], {})[fields[1]] = round(float(fields[column]), 1)
    return by_size


def print_rates(what: str, by_size: Rates, versus: Rates | None = None) -> None:
    for size, rates in by_size.items():
        for par, v in rates.items():
            ratio = f"  {v / versus[size][par]:.2f} x the disk" if versus else ""
            print(f"{what} {int(size) // 1024:>5} KiB writes, {par:>2} writer(s): {v:>6.0f}/s "
                  f"({v * int(size) / 2**20:4.0f} MiB/s){ratio}")


def measure_store(h: HostPlan, limits: dict[str, object]) -> None:
    """Add cloud-p2p's store rates (and the disk's, same run) to `limits` and print them."""
    store, disk = store_rates(h)
    limits["store_by_size"], limits["store_disk_by_size"] = store, disk
    print_rates("disk, one by one", disk)
    print_rates("cloud-p2p store ", store, versus=disk)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", type=Path, default=Path("reports/lab-limits.json"))
    p.add_argument("--store", action="store_true",
                   help="also measure cloud-p2p's own store on h1 (needs a deploy)")
    args = p.parse_args(argv)
    h1, h2 = HostPlan(1), HostPlan(2)
    hosts.ssh(h2, f"ufw allow {PORT}/tcp >/dev/null 2>&1 || true")
    with ThreadPoolExecutor(1) as pool:
        try:
            receiver = pool.submit(run_probe, h2, "tcp_receive.py", str(PORT), timeout=120)
            time.sleep(1.0)
            tcp = float(run_probe(h1, "tcp_send.py", h2.address, str(PORT), "512"))
            receiver.result()
        finally:
            hosts.ssh(h2, f"ufw delete allow {PORT}/tcp >/dev/null 2>&1 || true")
    by_size = disk_rates(h1)
    result: dict[str, object] = {"cpu_sha256_ms_per_mib": sha256_ms_per_mib(),
                                 "tcp_mib_s": round(tcp / 2**20, 1),
                                 "durable_writes_per_s": by_size["65536"],
                                 "durable_by_size": by_size}
    print(f"this machine's SHA-256:      {result['cpu_sha256_ms_per_mib']} ms per MiB")
    print(f"raw TCP h1 -> h2:            {result['tcp_mib_s']:.0f} MiB/s")
    print_rates("durable", by_size)
    if args.store:
        measure_store(h1, result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
