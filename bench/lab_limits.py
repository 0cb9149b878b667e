"""The lab's own limits, the yardstick for every throughput figure (issue 5 groundwork).

    sudo .venv/bin/python -m bench.lab_limits [--json reports/lab-limits.json]

Needs a running lab (python -m cloudlab up). Measures, between real lab hosts:
- raw TCP throughput from h1 to h2 (one connection, 1 MiB writes, 512 MiB),
- durable write rate on a host's disk: 64 KiB written + fsync of the file and its directory,
  as cloud-p2p does for every image (one writer, then eight in parallel).
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
PROBES = Path(__file__).resolve().parent / "probes"


def run_probe(h: HostPlan, probe: str, *args: str, timeout: float = 300) -> str:
    """Run one of bench/probes/*.py on a lab host (sent over SSH on stdin)."""
    cmd = ["ssh", *hosts.SSH_OPTS, "-i", str(hosts.KEY), f"root@{h.address}",
           "python3", "-", *args]
    r = subprocess.run(cmd, input=(PROBES / probe).read_text(), capture_output=True,
                       text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{h.name} {probe}: {r.stderr.strip()[-300:]}")
    return r.stdout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", type=Path, default=Path("reports/lab-limits.json"))
    args = p.parse_args()
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
    rates = {}
    for line in run_probe(h1, "fsync_rate.py", "/var/lib/cloud-p2p-bench").splitlines():
        par, rate = line.split()
        rates[int(par)] = float(rate)
    result = {"tcp_mib_s": round(tcp / 2**20, 1),
              "durable_writes_per_s": {str(k): round(v, 1) for k, v in rates.items()}}
    print(f"raw TCP h1 -> h2:            {result['tcp_mib_s']:.0f} MiB/s")
    for k, v in rates.items():
        print(f"durable 64 KiB writes, {k} writer(s): {v:.0f}/s "
              f"({v * 64 / 1024:.0f} MiB/s)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
