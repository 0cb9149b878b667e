"""cloud-p2p against HAProxy (leastconn) + nginx (WebDAV PUT) on the same lab hosts, driven by
the same load generator (issue 5 groundwork: the harness and a first table).

    sudo .venv/bin/python -m cloudlab up --image bench
    sudo .venv/bin/ansible-playbook -i lab/inventory.ini playbooks/deploy.yml
    sudo .venv/bin/python -m bench.compare [--json reports/compare.json]

Systems: cloud-p2p with fsync (the default), cloud-p2p with durability "none" (re-deployed,
rolling), and HAProxy on h1 in front of nginx on every host (nginx does not fsync). Each cell:
N concurrent clients uploading distinct PNGs of one size. The load generator is Python on the
same 2-core machine as the lab: for small images it, not the servers, may be the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson

from cloudlab import hosts
from cloudlab.cli import existing_hosts
from nodesvc.http import HttpClient, PeerUnreachable
from nodesvc.stress import make_png_parts, percentile, tagged_png

ROOT = Path(__file__).resolve().parents[1]
PEER = Path(__file__).resolve().parent / "peer"
SIZES = {"4KiB": 4096, "64KiB": 65536, "1MiB": 1 << 20}
CLIENTS = (10, 64)
REQUESTS = {"4KiB": 3000, "64KiB": 2000, "1MiB": 300}


def sh(h: hosts.HostPlan, command: str) -> None:
    r = hosts.ssh(h, command, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"{h.name}: {command[:60]}...: {r.stderr.strip()[-300:]}")


def setup_peer() -> None:
    """nginx on every host (port 8080), HAProxy on h1 (port 8000), ports opened in ufw."""
    lab = existing_hosts()
    site = (PEER / "nginx-site.conf").read_text()
    servers = "\n".join(f"    server {h.name} {h.address}:8080 maxconn 256" for h in lab)
    haproxy = (PEER / "haproxy.cfg.tmpl").read_text().replace("SERVERS", servers)
    for h in lab:
        sh(h, "command -v nginx >/dev/null || { echo 'no nginx: cloudlab up --image bench' >&2;"
              " exit 1; }")
        sh(h, f"cat > /etc/nginx/sites-enabled/peer.conf <<'X'\n{site}X\n"
              "mkdir -p /var/lib/cloud-p2p-peer/images && "
              "chown -R www-data: /var/lib/cloud-p2p-peer && "
              "ufw allow 8080/tcp >/dev/null && systemctl restart nginx")
    first = lab[0]
    sh(first, f"cat > /etc/haproxy/haproxy.cfg <<'X'\n{haproxy}X\n"
              "ufw allow 8000/tcp >/dev/null && systemctl restart haproxy")


def deploy(durability: str) -> None:
    settings = {"durability": durability} if durability != "fsync" else {}
    extra = orjson.dumps({"cloud_p2p_settings": settings}).decode()
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "ansible-playbook"), "-i", "lab/inventory.ini",
                    "playbooks/deploy.yml", "-e", extra], cwd=ROOT, check=True,
                   capture_output=True)


async def drive(host: str, port: int, size: int, clients: int, total: int,
                tag: str) -> dict[str, float]:
    parts = make_png_parts(size)
    http = HttpClient(max_idle=clients)
    latencies: list[float] = []
    failed = 0
    per_client = total // clients

    async def client(c: int) -> None:
        nonlocal failed
        for i in range(per_client):
            name = f"cmp-{tag}-{c}-{i}.png"
            body = tagged_png(parts, name)
            t0 = time.monotonic()
            try:
                resp = await http.request(host, port, "PUT", f"/images/{name}", body,
                                          timeout=60)
                ok = resp.status in (200, 201, 204)
            except PeerUnreachable:
                ok = False
            if ok:
                latencies.append((time.monotonic() - t0) * 1000)
            else:
                failed += 1

    t0 = time.monotonic()
    await asyncio.gather(*(client(c) for c in range(clients)))
    duration = time.monotonic() - t0
    await http.close()
    latencies.sort()
    return {"ok": len(latencies), "failed": failed,
            "rps": round(len(latencies) / duration, 1),
            "mib_s": round(len(latencies) * size / duration / 2**20, 1),
            "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2),
            "avg_ms": round(statistics.fmean(latencies), 2) if latencies else 0.0}


def leader_address() -> tuple[str, int]:
    from cloudlab.faults import agreed_leader
    leader = agreed_leader()
    if leader is None:
        raise RuntimeError("cloud-p2p has no agreed leader: deploy it first")
    h = hosts.HostPlan(leader)
    return h.address, 7000 + leader


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", type=Path, default=Path("reports/compare.json"))
    args = p.parse_args()
    setup_peer()
    lab = existing_hosts()
    rows = []
    for system in ("cloud-p2p fsync", "cloud-p2p no-fsync", "haproxy+nginx"):
        if system.startswith("cloud-p2p"):
            deploy("none" if "no-fsync" in system else "fsync")
            host, port = leader_address()
        else:
            host, port = lab[0].address, 8000
        for size_name, size in SIZES.items():
            for clients in CLIENTS:
                tag = f"{system.split()[-1]}-{size_name}-{clients}-{int(time.time())}"
                cell = asyncio.run(drive(host, port, size, clients, REQUESTS[size_name], tag))
                rows.append({"system": system, "size": size_name, "clients": clients, **cell})
                print(f"{system:20} {size_name:>6} x{clients:<3} {cell['rps']:>8.1f} req/s "
                      f"{cell['mib_s']:>7.1f} MiB/s p50 {cell['p50_ms']:>7.2f} ms "
                      f"p99 {cell['p99_ms']:>8.2f} ms failed {cell['failed']}", flush=True)
    deploy("fsync")
    peer = {(r["size"], r["clients"]): r for r in rows if r["system"] == "haproxy+nginx"}
    for r in rows:
        r["ratio_to_peer"] = round(r["rps"] / peer[(r["size"], r["clients"])]["rps"], 2) \
            if peer[(r["size"], r["clients"])]["rps"] else None
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
