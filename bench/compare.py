"""cloud-p2p against HAProxy (leastconn) + nginx (WebDAV PUT) on the same lab hosts, driven by
the same load generators, in one run (issue 5: the harness, a table and a chart).

    sudo scripts/install-bench-deps            # wrk and matplotlib, once
    sudo .venv/bin/python -m bench.compare [--json reports/compare.json]
        [--sizes 4KiB,64KiB,1MiB] [--clients 10,64] [--systems haproxy+nginx,...] [--no-wrk]
        [--keep-limits]

One command: if no lab is up it starts one with nginx and HAProxy installed (`cloudlab up
--image bench`; a lab started without `--image bench` has no nginx: `cloudlab down` first),
measures the lab's limits (bench.lab_limits, into reports/lab-limits.json; --keep-limits
reuses that file), deploys cloud-p2p with playbooks/deploy.yml for each of its systems, sets
the peer up, and runs every cell.

Systems: cloud-p2p with fsync (the default), cloud-p2p with durability "none" (re-deployed,
rolling), and HAProxy on h1 in front of nginx on every host (nginx does not fsync). The peer
runs beside cloud-p2p on the same hosts, and each of its cells is measured right after the
same cell of each cloud-p2p system ("paired_with" in its row): the lab's disk gets slower as
it fills, so measuring the peer only at the end favoured whichever ran first. Every cell
starts with the disk written out (`sync`, see flush_disk). Each cell:
N concurrent clients uploading distinct PNGs of one size, first with the Python load generator
(drive(), a fixed number of requests; "generator": "python"), then with wrk for a fixed time
(bench/wrk.py; "generator": "wrk"). Both run on the same 2-core machine as the lab: for small
images the generator, not the servers, may be the limit; wrk costs far less CPU per request.
The lab deploy sets no client token; for a cluster that has one, pass --token-file (default
$CLOUD_P2P_TOKEN_FILE, as cloud-p2p-client).

Every row gets ratio_to_peer (rps over haproxy+nginx's measured next to it: same cell and
generator) and, when
reports/lab-limits.json exists, limit_rps and ratio_to_limit: the raw TCP rate for that image
size, and for cloud-p2p fsync also the disk's durable write rate (best of 1, 8 and 64
writers), whichever is lower. Every cell ends with a timed `sync` (writeback_s: what it
acknowledged but left in memory, nginx's whole business) and gets durable_rps, its uploads
over the cell's time plus that write-back, and durable_ratio_to_peer. After deploying
cloud-p2p with fsync it also measures the node's store against the disk in the same run
(bench.lab_limits --store).
Writes reports/compare.json and a chart next to it (reports/compare.png, bench/chart.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench import lab_limits
from bench.wrk import run_wrk
from cloudlab import hosts
from cloudlab.cli import existing_hosts
from nodesvc.http import HttpClient, PeerUnreachable
from nodesvc.stress import make_png_parts, percentile, tagged_png

ROOT = Path(__file__).resolve().parents[1]
PEER = Path(__file__).resolve().parent / "peer"
SIZES = {"4KiB": 4096, "64KiB": 65536, "1MiB": 1 << 20}
CLIENTS = (10, 64)
REQUESTS = {"4KiB": 3000, "64KiB": 2000, "1MiB": 300}
SYSTEMS = ("cloud-p2p fsync", "cloud-p2p no-fsync", "haproxy+nginx")
PEER_SYSTEM = "haproxy+nginx"
WRK_SECONDS = 8.0


def sh(h: hosts.HostPlan, command: str, timeout: float = 60) -> None:
    r = hosts.ssh(h, command, timeout=timeout)
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


# What the benchmarks write, on every host: both systems' images and the disk probes' files.
BENCH_DATA = ("/var/lib/cloud-p2p/shared_images", "/var/lib/cloud-p2p-peer/images",
              "/var/lib/cloud-p2p-bench", "/var/lib/cloud-p2p-bench-store")
# ext4 without a journal (the lab's disk) does not hand out an inode freed less than a minute
# ago, and scans past every such inode on each file creation: right after a mass deletion,
# uploads measured up to 45% more CPU each (0.8 ms per file created, on both systems). A wipe
# is therefore followed by a sync and this wait, and done only when space runs short.
INODE_REUSE_WAIT = 62.0
MIN_FREE_GIB = 30  # a whole comparison writes about 25 GiB


def wipe_stored() -> None:
    """Delete what earlier cells and probes wrote, on every host, then wait until file
    creation is back to its normal cost (INODE_REUSE_WAIT). cloud-p2p is stopped meanwhile,
    so its index stays true, and started again if it was running."""
    lab = existing_hosts()
    for h in lab:
        sh(h, "systemctl is-active -q cloud-p2p && systemctl stop cloud-p2p "
              "&& touch /run/cloud-p2p-was-active; "
              f"find {' '.join(BENCH_DATA)} -mindepth 1 -delete 2>/dev/null; sync; true",
           timeout=900)  # tens of GiB in hundreds of thousands of files
    for h in lab:  # a start right after a stop can fail in the lab's containers (219/CGROUP);
        # systemd then restarts the unit by itself a second later (Restart=on-failure)
        sh(h, "if [ -e /run/cloud-p2p-was-active ]; then rm /run/cloud-p2p-was-active; "
              "systemctl start cloud-p2p || true; fi")
    print(f"(wiped the lab's stored images; waiting {INODE_REUSE_WAIT:.0f} s for the disk's "
          "inode allocator)", flush=True)
    time.sleep(INODE_REUSE_WAIT)


def flush_disk() -> float:
    """Write out every dirty page of the lab's disk (a `sync` on the host); the seconds it
    took. Before a cell: nginx does not fsync, so it leaves up to gigabytes behind, and
    cloud-p2p's group commit flushes with syncfs(2), which writes out every dirty page of the
    filesystem, so without this the first cell after the peer's paid for the peer's data (p99
    over a second, half the req/s). After a cell, the time is its write-back: nothing much
    after cloud-p2p with fsync, whose answers come after the flush; what nginx (and cloud-p2p
    without fsync) acknowledged but left in memory."""
    r = hosts.ssh(existing_hosts()[0],
                  "s=$(date +%s%N); sync; e=$(date +%s%N); echo $((e - s))", timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"sync failed: {r.stderr.strip()[-300:]}")
    return int(r.stdout.strip()) / 1e9


def durable_rate(ok: int, rps: float, writeback_s: float) -> float:
    """Uploads per second counting the write-back a cell left behind: its `ok` uploads over
    the cell's own time plus the time until they were on the disk."""
    if ok <= 0 or rps <= 0:
        return 0.0
    return round(ok / (ok / rps + writeback_s), 1)


def free_gib() -> float:
    """Free space where the lab's hosts keep images (one disk for all of them)."""
    r = hosts.ssh(existing_hosts()[0], "df --output=avail -B1M /var/lib | tail -1", timeout=30)
    return int(r.stdout.strip() or 0) / 1024


def make_room(min_free_gib: float = MIN_FREE_GIB) -> None:
    """Wipe the benchmarks' data only if the lab's disk is running short of space."""
    if free_gib() < min_free_gib:
        wipe_stored()


def deploy(durability: str) -> None:
    """Deploy cloud-p2p with that durability; the peer's ports stay open in ufw (the firewall
    role removes port rules it was not told about)."""
    settings = {"durability": durability} if durability != "fsync" else {}
    extra = orjson.dumps({"cloud_p2p_settings": settings,
                          "cloud_p2p_firewall_extra_ports": [8000, 8080]}).decode()
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "ansible-playbook"), "-i", "lab/inventory.ini",
                    "playbooks/deploy.yml", "-e", extra], cwd=ROOT, check=True,
                   capture_output=True)


async def drive(host: str, port: int, size: int, clients: int, total: int,
                tag: str, token: str | None = None) -> dict[str, float]:
    parts = make_png_parts(size)
    http = HttpClient(max_idle=clients)
    headers = [("authorization", f"Bearer {token}")] if token else []
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
                                          headers=headers, timeout=60)
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


def pick(text: str | None, known: dict[str, int] | tuple[str, ...], what: str) -> list[str]:
    """A comma list of names from `known` (None: all of them, in their order)."""
    if text is None:
        return list(known)
    chosen = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in chosen if x not in known]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"--{what}: unknown {unknown or text!r}; "
                                         f"choose from {','.join(known)}")
    return [x for x in known if x in chosen]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=Path("reports/compare.json"))
    p.add_argument("--limits", type=Path, default=Path("reports/lab-limits.json"),
                   help="where the lab's limits are written (bench.lab_limits)")
    p.add_argument("--keep-limits", action="store_true",
                   help="reuse the limits file instead of measuring them again")
    p.add_argument("--sizes", help=f"comma list of {','.join(SIZES)} (default all)")
    p.add_argument("--clients", help="comma list of client counts (default 10,64)")
    p.add_argument("--systems", help=f"comma list of {','.join(SYSTEMS)} (default all)")
    p.add_argument("--no-wrk", action="store_true", help="only the Python load generator")
    p.add_argument("--wrk-seconds", type=float, default=WRK_SECONDS,
                   help=f"duration of each wrk cell (default {WRK_SECONDS:g})")
    p.add_argument("--token-file", type=Path,
                   default=os.environ.get("CLOUD_P2P_TOKEN_FILE") or None,
                   help="client token for cloud-p2p uploads (default $CLOUD_P2P_TOKEN_FILE; "
                        "the lab deploy sets none)")
    args = p.parse_args(argv)
    try:
        args.sizes = pick(args.sizes, SIZES, "sizes")
        args.systems = pick(args.systems, SYSTEMS, "systems")
        raw = args.clients or ",".join(map(str, CLIENTS))
        # (once each: the ratios pair each cell with its peer cell by size and clients)
        args.clients = list(dict.fromkeys(int(c) for c in raw.split(",") if c.strip()))
        if not args.clients or min(args.clients) < 1:
            raise ValueError(raw)
    except ValueError:
        p.error(f"--clients: a comma list of positive integers, got {raw!r}")
    except argparse.ArgumentTypeError as exc:
        p.error(str(exc))
    return args


def load_limits(path: Path) -> dict[str, Any] | None:
    return orjson.loads(path.read_bytes()) if path.is_file() else None


def limit_rps(system: str, size: int, limits: dict[str, Any]) -> float:
    """The lab's ceiling for uploads/s of `size` bytes: raw TCP, and for the system that
    fsyncs also the disk's durable write rate for that size (the best over its writer counts;
    older reports: the 64 KiB rate)."""
    tcp = float(limits["tcp_mib_s"]) * 2**20 / size
    if system == "cloud-p2p fsync":
        durable = limits.get("durable_by_size", {}).get(str(size)) \
            or limits["durable_writes_per_s"]
        return min(tcp, max(float(v) for v in durable.values()))
    return tcp


def add_ratios(rows: list[dict[str, Any]], limits: dict[str, Any] | None) -> None:
    """ratio_to_peer (same size, clients and generator, the peer's row measured next to this
    one if there is one, else its first; None without a peer row), the same for the rates
    counting the write-back left behind (durable_ratio_to_peer, where both rows have one),
    and, with limits, limit_rps and ratio_to_limit."""
    peer: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        if r["system"] == PEER_SYSTEM:
            cell = (r["size"], r["clients"], r["generator"])
            peer.setdefault(cell, r)
            peer[(*cell, r.get("paired_with"))] = r
    for r in rows:
        cell = (r["size"], r["clients"], r["generator"])
        base = r if r["system"] == PEER_SYSTEM \
            else peer.get((*cell, r["system"]), peer.get(cell))
        r["ratio_to_peer"] = round(r["rps"] / base["rps"], 2) if base and base["rps"] else None
        if base and base.get("durable_rps") and r.get("durable_rps") is not None:
            r["durable_ratio_to_peer"] = round(r["durable_rps"] / base["durable_rps"], 2)
        if limits is not None:
            r["limit_rps"] = round(limit_rps(r["system"], SIZES[r["size"]], limits), 1)
            r["ratio_to_limit"] = round(r["rps"] / r["limit_rps"], 3) if r["limit_rps"] else None


def write_report(rows: list[dict[str, Any]], limits: dict[str, Any] | None, path: Path) -> None:
    add_ratios(rows, limits)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))


def chart(path: Path) -> None:
    try:
        from bench.chart import render
    except ImportError as exc:  # matplotlib: pip install -e '.[bench]'
        print(f"no chart ({exc}): pip install -e '.[bench]', then python -m bench.chart")
        return
    rows = orjson.loads(path.read_bytes())
    if rows:
        print(f"chart: {render(rows, path.with_suffix('.png'))}")


def run_cell(system: str, address: tuple[str, int], size_name: str, clients: int,
             generator: str, wrk_seconds: float, token: str | None) -> dict[str, Any]:
    """One cell against one system; its row (printed as it is done)."""
    host, port = address
    size = SIZES[size_name]
    make_room()  # the host's free space can shrink under a run: a full disk ended one
    flush_disk()
    tag = f"{system.split()[-1]}-{size_name}-{clients}-{generator}-{int(time.time())}"
    if generator == "wrk":
        cell = run_wrk(host, port, size, clients, wrk_seconds, tag, token)
    else:
        cell = asyncio.run(drive(host, port, size, clients, REQUESTS[size_name], tag, token))
    cell["writeback_s"] = round(flush_disk(), 3)
    cell["durable_rps"] = durable_rate(int(cell["ok"]), cell["rps"], cell["writeback_s"])
    print(f"{system:20} {size_name:>6} x{clients:<3} {generator:>6} "
          f"{cell['rps']:>8.1f} req/s {cell['mib_s']:>7.1f} MiB/s "
          f"p50 {cell['p50_ms']:>7.2f} ms p99 {cell['p99_ms']:>8.2f} ms "
          f"failed {cell['failed']}; write-back after {cell['writeback_s']:.2f} s, "
          f"{cell['durable_rps']:.1f} durable/s", flush=True)
    return {"system": system, "size": size_name, "clients": clients, "generator": generator,
            **cell}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    token = args.token_file.read_text().strip() if args.token_file else None
    if not args.no_wrk and shutil.which("wrk") is None:
        print("wrk is not installed: run scripts/install-bench-deps (or pass --no-wrk)",
              file=sys.stderr)
        return 2
    if not existing_hosts():  # one command: the lab, with nginx and HAProxy installed
        from cloudlab import cli
        cli.up(3, "bench")
    if not (args.keep_limits and args.limits.is_file()):
        lab_limits.main(["--json", str(args.limits)])
    limits = load_limits(args.limits)
    lab = existing_hosts()
    rows: list[dict[str, Any]] = []
    with_peer = PEER_SYSTEM in args.systems
    if with_peer:
        setup_peer()
    ours = [s for s in args.systems if s != PEER_SYSTEM]
    for system in ours or [None]:  # None: the peer alone
        make_room()
        if system is not None:
            deploy("none" if "no-fsync" in system else "fsync")
            if limits is not None and "no-fsync" not in system:
                # The node's own durable write path on the same disk, without HTTP: what
                # group commit makes of the disk's fsync rate.
                lab_limits.measure_store(lab[0], limits)
                args.limits.write_bytes(orjson.dumps(limits, option=orjson.OPT_INDENT_2))
        targets = ([(system, leader_address(), token)] if system is not None else []) \
            + ([(PEER_SYSTEM, (lab[0].address, 8000), None)] if with_peer else [])
        for size_name in args.sizes:
            for clients in args.clients:
                for generator in ("python",) if args.no_wrk else ("python", "wrk"):
                    for name, address, cell_token in targets:
                        row = run_cell(name, address, size_name, clients, generator,
                                       args.wrk_seconds, cell_token)
                        if name == PEER_SYSTEM:
                            row["paired_with"] = system
                        rows.append(row)
        write_report(rows, limits, args.json)  # after each system: partial results survive
    if "cloud-p2p no-fsync" in args.systems:
        deploy("fsync")
    write_report(rows, limits, args.json)
    print(f"\nJSON: {args.json}")
    chart(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
