"""What each change bought: the same cells, on the same lab, for a list of git revisions.

    sudo .venv/bin/python -m cloudlab up
    sudo .venv/bin/python -m bench.changes \\
        --rev cba8e70="before" --rev e922d50="+ group commit" --rev HEAD="now" \\
        [--cells 64KiB:64,1MiB:10] [--seconds 8] [--rounds 2] [--json reports/changes.json]

Each revision is checked out in a temporary git worktree and deployed from there to the lab
(the playbooks build the wheel from that tree: a rolling re-deploy), then every cell runs with
wrk (bench/wrk.py) against the leader: requests per second, MiB/s, p50, p99 and the CPU time
per upload of the cloud-p2p processes and of the machine (bench.cpu.measure). With --rounds
N the whole list runs N times, in order then in reverse, and the table shows each cell's
median over the rounds: figures on this shared 2-core machine vary by tens of percent from one
minute to the next, and alternating the order keeps a slow minute from favouring one
revision. Each row also shows the change against the row before. Compare rows of one run,
not figures across machines.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.compare import SIZES, leader_address, make_room
from bench.cpu import CLOUD_P2P, measure
from bench.wrk import run_wrk
from cloudlab import faults

ROOT = Path(__file__).resolve().parents[1]
INVENTORY = ROOT / "lab" / "inventory.ini"


def parse_rev(text: str) -> tuple[str, str]:
    rev, _, label = text.partition("=")
    return rev, label or rev


def parse_cells(text: str) -> list[tuple[str, int]]:
    cells = []
    for item in text.split(","):
        size, _, clients = item.partition(":")
        if size not in SIZES or not clients.isdigit():
            raise argparse.ArgumentTypeError(f"cell {item!r}: want SIZE:CLIENTS, SIZE one of "
                                             f"{', '.join(SIZES)}")
        cells.append((size, int(clients)))
    return cells


def _give_venvs_pip(full: str) -> None:
    """Revisions before e72ccf0 install with the venv's own pip; later ones make the venv
    without pip (they run the wheelhouse's). Going back to an older revision: add pip."""
    from cloudlab.cli import node_hosts
    from cloudlab.hosts import ssh

    tasks = subprocess.run(["git", "show", f"{full}:roles/cloud_p2p_install/tasks/venv.yml"],
                           cwd=ROOT, capture_output=True, text=True).stdout
    if "/bin/pip\"" not in tasks:
        return
    venv = "/opt/cloud-p2p/venv"
    for h in node_hosts():
        ssh(h, f"test ! -x {venv}/bin/python || test -x {venv}/bin/pip "
               f"|| {venv}/bin/python -m ensurepip --default-pip >/dev/null")


def deploy_revision(rev: str, workdir: Path) -> str:
    """Check `rev` out under `workdir` and deploy it to the lab; return its full hash."""
    full = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT,
                          check=True, capture_output=True, text=True).stdout.strip()
    tree = workdir / full[:12]
    subprocess.run(["git", "worktree", "add", "--detach", "--force", str(tree), full],
                   cwd=ROOT, check=True, capture_output=True)
    try:
        # One cluster secret for every revision: a worktree would generate its own, and the
        # first node restarted with it is refused by the others (503 on /healthz: the
        # rolling restart stops).
        if (ROOT / "secrets").is_dir():
            shutil.copytree(ROOT / "secrets", tree / "secrets", dirs_exist_ok=True)
        _give_venvs_pip(full)
        r = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i",
                            str(INVENTORY), "playbooks/deploy.yml"], cwd=tree,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"deploy of {rev} failed:\n{r.stdout[-2000:]}")
        shutil.copytree(tree / "secrets", ROOT / "secrets", dirs_exist_ok=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                       capture_output=True)
    faults.wait_settled(60)
    return full


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", action="append", type=parse_rev, required=True,
                   help="REV=LABEL, in order (repeat)")
    p.add_argument("--cells", type=parse_cells, default=parse_cells("64KiB:64,1MiB:10,1MiB:64"))
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--json", type=Path, default=Path("reports/changes.json"))
    args = p.parse_args(argv)
    if not INVENTORY.exists():
        p.error(f"{INVENTORY} is missing: start the lab first (python -m cloudlab up)")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cloud-p2p-changes-") as tmp:
        for round_ in range(args.rounds):
            order = args.rev if round_ % 2 == 0 else list(reversed(args.rev))
            for rev, label in order:
                t0 = time.monotonic()
                make_room()  # the disk would fill up over a long run
                full = deploy_revision(rev, Path(tmp))
                host, port = leader_address()
                print(f"== round {round_ + 1}: {label} ({full[:8]}), deployed in "
                      f"{time.monotonic() - t0:.0f} s", flush=True)
                for size, clients in args.cells:
                    tag = f"chg-{full[:8]}-{size}-{clients}-{time.time_ns()}"
                    cell, use = measure(functools.partial(
                        run_wrk, host, port, SIZES[size], clients, args.seconds, tag))
                    user, system = use.per_upload_ms(cell["ok"], CLOUD_P2P)
                    cpu = {"cpu_ms": round(user + system, 3), "cpu_user_ms": round(user, 3),
                           "machine_cpu_ms": round(use.machine / max(1, cell["ok"]) * 1000, 3)}
                    rows.append({"label": label, "rev": full[:12], "round": round_ + 1,
                                 "size": size, "clients": clients, **cell, **cpu})
                    print(f"   {size:>6} x{clients:<3} {cell['rps']:>8.1f} req/s "
                          f"{cell['mib_s']:>7.1f} MiB/s p50 {cell['p50_ms']:>7.2f} ms "
                          f"p99 {cell['p99_ms']:>8.2f} ms failed {cell['failed']:.0f}; "
                          f"CPU per upload: cloud-p2p {cpu['cpu_ms']:.3f} ms "
                          f"(user {cpu['cpu_user_ms']:.3f}), machine "
                          f"{cpu['machine_cpu_ms']:.3f} ms", flush=True)
    print()
    print(format_table(rows))
    print("\nCPU of the cloud-p2p processes per upload (less noisy than req/s):")
    print(format_table(rows, "cpu_ms", "ms"))
    print("\n... of it in user space (the steadiest figure: the kernel's share moves with the "
          "disk):")
    print(format_table(rows, "cpu_user_ms", "ms"))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    print(f"\nJSON: {args.json}")
    return 0


def format_table(rows: list[dict[str, Any]], key: str = "rps", unit: str = "req/s") -> str:
    """One line per revision, the median `key` per cell over the rounds, with the change
    against the revision before."""
    cells = list(dict.fromkeys((r["size"], r["clients"]) for r in rows))
    labels = list(dict.fromkeys(r["label"] for r in rows if r.get("round", 1) == 1))
    samples: dict[tuple[str, str, int], list[float]] = {}
    for r in rows:
        if key in r:  # rows of older runs have no CPU figures
            samples.setdefault((r["label"], r["size"], r["clients"]), []).append(r[key])
    by = {key: statistics.median(v) for key, v in samples.items()}
    head = f"{'change':32}" + "".join(f"{s + ' x' + str(c):>22}" for s, c in cells)
    lines = [head, "-" * len(head)]
    for i, label in enumerate(labels):
        line = f"{label[:32]:32}"
        for size, clients in cells:
            value = by.get((label, size, clients))
            before = by.get((labels[i - 1], size, clients)) if i else None
            delta = f" ({(value / before - 1) * 100:+.0f}%)" if value and before else ""
            shown = "-" if value is None else \
                f"{value:.0f} {unit}" if unit == "req/s" else f"{value:.3f} {unit}"
            line += f"{shown + delta:>22}"
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
