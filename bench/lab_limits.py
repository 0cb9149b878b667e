"""The lab's own limits, the yardstick for every throughput figure (issue 5 groundwork).

    sudo .venv/bin/python -m bench.lab_limits [--json reports/lab-limits.json]

Needs a running lab (python -m cloudlab up). Measures, between real lab hosts:
- raw TCP throughput from h1 to h2 (one connection, 1 MiB writes, 512 MiB),
- durable write rate on a host's disk: 4 KiB, 64 KiB and 1 MiB written + fsync of the file
  and its directory, as an image written on its own (one writer, then eight in parallel).
  "durable_writes_per_s" keeps the 64 KiB figures; "durable_by_size" has all of them.
- with --store (after a deploy), the same sizes written durably through cloud-p2p's own store
  and group commit, 8 and 64 writers ("store_by_size"): what the node's disk path can take
  when the network and HTTP are left out.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from cloudlab import hosts
from cloudlab.plan import HostPlan

PORT = 9000
DEPLOYED_PYTHON = "/opt/cloud-p2p/venv/bin/python"
PROBES = Path(__file__).resolve().parent / "probes"


def run_probe(h: HostPlan, probe: str, *args: str, timeout: float = 300,
              python: str = "python3") -> str:
    """Run one of bench/probes/*.py on a lab host (sent over SSH on stdin)."""
    cmd = ["ssh", *hosts.SSH_OPTS, "-i", str(hosts.KEY), f"root@{h.address}",
           python, "-", *args]
    r = subprocess.run(cmd, input=(PROBES / probe).read_text(), capture_output=True,
                       text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{h.name} {probe}: {r.stderr.strip()[-300:]}")
    return r.stdout


def store_rates(h: HostPlan, seconds: float = 3.0) -> dict[str, dict[str, float]]:
    """Durable writes per second through cloud-p2p's own store and group commit on `h`'s disk
    (the deployed package's code), by image size and number of concurrent writers."""
    out = run_probe(h, "store_rate.py", "/var/lib/cloud-p2p-bench-store", str(seconds),
                    python=DEPLOYED_PYTHON)
    return _rates(out)


def _rates(probe_output: str) -> dict[str, dict[str, float]]:
    """"size writers rate" lines -> {size: {writers: rate}}."""
    by_size: dict[str, dict[str, float]] = {}
    for line in probe_output.splitlines():
        size, par, rate = line.split()
        by_size.setdefault(size, {})[par] = round(float(rate), 1)
    return by_size


def print_rates(what: str, by_size: dict[str, dict[str, float]]) -> None:
    for size, rates in by_size.items():
        for par, v in rates.items():
            print(f"{what} {int(size) // 1024:>5} KiB writes, {par} writer(s): {v:>6.0f}/s "
                  f"({v * int(size) / 2**20:.0f} MiB/s)")


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
    by_size = _rates(run_probe(h1, "fsync_rate.py", "/var/lib/cloud-p2p-bench"))
    result: dict[str, object] = {"tcp_mib_s": round(tcp / 2**20, 1),
                                 "durable_writes_per_s": by_size["65536"],
                                 "durable_by_size": by_size}
    print(f"raw TCP h1 -> h2:            {result['tcp_mib_s']:.0f} MiB/s")
    print_rates("durable", by_size)
    if args.store:
        result["store_by_size"] = store_rates(h1)
        print_rates("cloud-p2p store", result["store_by_size"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
