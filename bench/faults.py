"""The fault table on the lab: each fault injected under a steady upload load.

    sudo .venv/bin/python -m bench.faults [--reps 10] [--json reports/faults.json]

Needs a lab with cloud-p2p deployed (./demo, or cloudlab up + playbooks/deploy.yml).
Prints: case, repetitions, time until uploads succeed again (p50, max), until one leader
holds for 3 s after the fault is undone (max), uploads, failed
client requests, and the audit (every acknowledged upload on exactly one host, right sha256,
no temporary files).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from cloudlab.faults import CASES, format_table, run_case


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--reps", type=int, default=10, help="repetitions of the leader kills")
    p.add_argument("--other-reps", type=int, default=3, help="repetitions of the other cases")
    p.add_argument("--only", help="run only cases whose name contains this")
    p.add_argument("--json", type=Path, default=Path("reports/faults.json"))
    args = p.parse_args()
    tag = datetime.now(UTC).strftime("%H%M%S")
    rows = []
    for name in CASES:
        if args.only and args.only not in name:
            continue
        reps = args.reps if "leader's" in name else args.other_reps
        t0 = time.monotonic()
        row = run_case(name, reps, tag).row()
        row["wall_s"] = round(time.monotonic() - t0, 1)
        rows.append(row)
        print(f"{name}: done in {row['wall_s']} s, audit {row['audit']}", flush=True)
    print()
    print(format_table(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    print(f"\nJSON: {args.json}")
    bad = [r for r in rows if r["failed_requests"] or r["audit"] != "clean"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
