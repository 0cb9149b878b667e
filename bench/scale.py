"""How cloud-p2p behaves as the cluster grows: throughput, balance and election time per size.

    sudo .venv/bin/python -m bench.scale [--nodes 3,5,7] [--clients 20] [--requests 25]
        [--size 64KiB] [--kills 3] [--json reports/scale.json]

For each N, in increasing order, on a fresh lab (`cloudlab down`, then `up --hosts N`: a
fresh start, because least-load placement would send every new upload to nodes added empty
to a grown cluster and skew the distribution):
- deploy cloud-p2p with playbooks/deploy.yml and wait until all N name node N as leader;
- run the seed's stress test (playbooks/stress.yml, which also checks that every file landed
  on the node the report names, with its sha256): req/s, MiB/s, p50/p99 and the per-node
  distribution (min, max, stddev, balanced);
- `--kills` times: SIGKILL the leader's cloud-p2p main process (systemctl kill over SSH),
  and time from the kill (the leader host's clock, which is this machine's: the hosts are
  containers) until every survivor's GET /status, polled every ~10 ms, names the same new
  leader and that node says it leads (at most 30 s, else a failure); then wait until systemd
  has restarted the killed node and bully has made it leader again, before the next kill.
The lab is torn down at the end, even on error.

All lab hosts share this machine's 2 CPU cores (and the load generator runs there too), so
throughput does not grow with N; that is expected. The table shows what more nodes cost:
balance, latency and election time (more peers to hear from, more heartbeats per core).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from cloudlab import cli, hosts
from cloudlab.faults import wait_settled
from cloudlab.plan import HostPlan

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
STRESS_REPORT = ROOT / "reports" / "last-stress.json"
ELECTION_TIMEOUT = 30.0
POLL_INTERVAL = 0.01


def playbook(name: str, *extra: str, timeout: float = 900) -> int:
    """Run playbooks/<name> against the lab; its output goes to reports/scale-<name>.log."""
    log = ROOT / "reports" / f"scale-{Path(name).stem}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"\n==== {time.strftime('%H:%M:%S')} {name} {' '.join(extra)}\n")
        out.flush()
        return subprocess.run([str(PLAYBOOK), "-i", "lab/inventory.ini", f"playbooks/{name}",
                               *extra], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=timeout).returncode


def view(h: HostPlan) -> dict[str, object] | None:
    """One node's GET /status, or None if it does not answer quickly."""
    try:
        with urllib.request.urlopen(f"http://{h.address}:{7000 + h.n}/status",
                                    timeout=0.25) as r:
            data = orjson.loads(r.read())
            return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def stress(clients: int, requests: int, size: str) -> dict[str, object]:
    before = STRESS_REPORT.stat().st_mtime if STRESS_REPORT.exists() else 0.0
    rc = playbook("stress.yml", "-e", f"cloud_p2p_stress_clients={clients}",
                  "-e", f"cloud_p2p_stress_requests={requests}",
                  "-e", f"cloud_p2p_stress_size={size}", timeout=900)
    if not STRESS_REPORT.exists() or STRESS_REPORT.stat().st_mtime <= before:
        raise RuntimeError(f"stress.yml wrote no report (rc {rc}): see reports/scale-stress.log")
    report = orjson.loads(STRESS_REPORT.read_bytes())
    s = report["summary"]
    counts = list(report["distribution"].values())
    return {"ok": s["ok"], "failed": s["failed"], "rps": s["throughput_rps"],
            "mib_s": s["bandwidth_mib_s"], "p50_ms": s["latency_ms"]["p50"],
            "p99_ms": s["latency_ms"]["p99"], "distribution": report["distribution"],
            "min": min(counts), "max": max(counts), "stddev": s["stddev"],
            "balanced": s["balanced"], "playbook_passed": rc == 0}


def kill_leader(leader: HostPlan) -> float:
    """SIGKILL the leader's service; the moment of the kill on the (shared) wall clock."""
    r = hosts.ssh(leader, "systemctl kill --kill-who=main --signal=KILL cloud-p2p "
                          "&& date +%s.%N", timeout=15)
    if r.returncode != 0:
        raise RuntimeError(f"{leader.name}: kill failed: {r.stderr.strip()[-200:]}")
    return float(r.stdout.split()[-1])


def election(lab: list[HostPlan], killed: int, pool: ThreadPoolExecutor) -> dict[str, object]:
    """Kill the leader; time until all survivors agree on a new leader that says it leads."""
    survivors = [h for h in lab if h.n != killed]
    t_kill = kill_leader(HostPlan(killed))
    polls = 0
    while time.time() - t_kill < ELECTION_TIMEOUT:
        t_round = time.time()
        views = dict(zip([h.n for h in survivors], pool.map(view, survivors), strict=True))
        polls += 1
        leaders = {v.get("leader") if v else None for v in views.values()}
        new = leaders.pop() if len(leaders) == 1 else None
        st = views.get(new) if isinstance(new, int) else None
        if st is not None and st.get("role") == "leader":
            return {"killed": killed, "new_leader": new, "term": st.get("term"),
                    "ms": round((t_round - t_kill) * 1000, 1), "polls": polls}
        time.sleep(max(0.0, POLL_INTERVAL - (time.time() - t_round)))
    return {"killed": killed, "new_leader": None, "ms": None, "polls": polls,
            "error": f"no agreed new leader within {ELECTION_TIMEOUT:.0f}s"}


def run_size(n: int, args: argparse.Namespace) -> dict[str, object]:
    row: dict[str, object] = {"nodes": n}
    t0 = time.monotonic()
    cli.down()
    lab = cli.up(n)
    row["up_s"] = round(time.monotonic() - t0, 1)
    t0 = time.monotonic()
    if playbook("deploy.yml") != 0:
        raise RuntimeError(f"deploy.yml failed on {n} hosts: see reports/scale-deploy.log")
    row["deploy_s"] = round(time.monotonic() - t0, 1)
    row["settle_s"] = round(wait_settled(120), 2)
    print(f"[N={n}] up {row['up_s']} s, deploy {row['deploy_s']} s, leader agreed; stress",
          flush=True)
    row["stress"] = st = stress(args.clients, args.requests, args.size)
    print(f"[N={n}] {st['rps']} req/s, {st['mib_s']} MiB/s, p50 {st['p50_ms']} ms, "
          f"p99 {st['p99_ms']} ms, distribution {st['distribution']}", flush=True)
    kills: list[dict[str, object]] = []
    with ThreadPoolExecutor(max_workers=n) as pool:
        for i in range(args.kills):
            wait_settled(60)
            time.sleep(1.0)  # let the restarted node's views and heartbeats steady
            result = election(lab, n, pool)
            kills.append(result)
            print(f"[N={n}] kill {i + 1}/{args.kills}: "
                  + (f"node {result['new_leader']} leads after {result['ms']} ms"
                     if result["ms"] is not None else str(result["error"])), flush=True)
            result["resettle_s"] = round(wait_settled(60), 2)
    times = sorted(float(k["ms"]) for k in kills if k["ms"] is not None)  # type: ignore[arg-type]
    row["elections"] = kills
    row["election_ms_median"] = round(statistics.median(times), 1) if times else None
    row["election_ms_max"] = times[-1] if times else None
    row["election_failures"] = len(kills) - len(times)
    return row


def format_table(rows: list[dict[str, object]]) -> str:
    head = (f"{'N':>2} {'req/s':>7} {'MiB/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'min':>4} "
            f"{'max':>4} {'stddev':>6} {'bal':>3} {'files':>5} {'kills':>5} "
            f"{'elect med':>9} {'elect max':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        s: dict[str, object] = r["stress"]  # type: ignore[assignment]
        med, mx = r["election_ms_median"], r["election_ms_max"]
        kills = f"{len(r['elections']) - r['election_failures']}/{len(r['elections'])}"  # type: ignore[arg-type,operator]
        lines.append(
            f"{r['nodes']:>2} {s['rps']:>7} {s['mib_s']:>6} {s['p50_ms']:>7} {s['p99_ms']:>7} "
            f"{s['min']:>4} {s['max']:>4} {s['stddev']:>6} "
            f"{'yes' if s['balanced'] else 'no':>3} {'ok' if s['playbook_passed'] else 'BAD':>5} "
            f"{kills:>5} {(f'{med} ms' if med is not None else '-'):>9} "
            f"{(f'{mx} ms' if mx is not None else '-'):>9}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", default="3,5,7", help="cluster sizes, comma-separated")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--requests", type=int, default=25, help="requests per client")
    p.add_argument("--size", default="64KiB")
    p.add_argument("--kills", type=int, default=3, help="leader kills per cluster size")
    p.add_argument("--json", type=Path, default=Path("reports/scale.json"))
    args = p.parse_args()
    sizes = sorted({int(x) for x in args.nodes.split(",") if x.strip()})
    if not sizes or sizes[0] < 2:
        p.error("--nodes needs sizes of at least 2 (a leader kill needs a survivor)")
    rows: list[dict[str, object]] = []
    t0 = time.monotonic()
    try:
        for n in sizes:
            rows.append(run_size(n, args))
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    finally:
        cli.down()
    print(f"\n{format_table(rows)}\n\nwall time {time.monotonic() - t0:.0f} s; JSON: {args.json}")
    bad = [r for r in rows if r["election_failures"]
           or not r["stress"]["playbook_passed"]]  # type: ignore[index]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
