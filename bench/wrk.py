"""wrk as a second load generator for bench/compare.py: a C client with no Python in the way.

    python -c "from bench.wrk import run_wrk; print(run_wrk('127.0.0.1', 7001, 65536, 10, 5, 't1'))"

Runs `wrk -t threads -c connections -d duration --latency -s bench/wrk_put.lua` (scripts/
install-bench-deps installs wrk): PUT /images/wrk-<tag>-<thread>-<n>.png, every name distinct,
all with one PNG body of `size` bytes. Returns the keys of compare.drive().
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import orjson

from nodesvc.stress import make_png_parts, tagged_png

SCRIPT = Path(__file__).resolve().parent / "wrk_put.lua"
MARK = "WRK_JSON "


def parse_output(stdout: str, size: int) -> dict[str, float]:
    """The WRK_JSON line of wrk_put.lua's done() as compare.drive()'s dict."""
    line = next((x for x in stdout.splitlines() if x.startswith(MARK)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no {MARK.strip()} line:\n{stdout[-2000:]}")
    r = orjson.loads(line[len(MARK):])
    seconds = r["duration_us"] / 1e6
    lat = r["latency_us"]
    ok = int(r["ok"])
    return {"ok": ok, "failed": sum(int(v) for v in r["errors"].values()),
            "rps": round(ok / seconds, 1) if seconds else 0.0,
            "mib_s": round(ok * size / seconds / 2**20, 1) if seconds else 0.0,
            "p50_ms": round(lat["p50"] / 1000, 2), "p99_ms": round(lat["p99"] / 1000, 2),
            "avg_ms": round(lat["mean"] / 1000, 2)}


def run_wrk(host: str, port: int, size: int, connections: int, duration_s: float, tag: str,
            token: str | None = None, threads: int = 2) -> dict[str, float]:
    """One cell with wrk: `connections` clients uploading distinct names for `duration_s`.

    ok = 2xx responses; failed = non-2xx responses + socket errors + timeouts (60 s, as
    drive()); latencies cover every response wrk saw."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed: run scripts/install-bench-deps (as root)")
    threads = max(1, min(threads, connections))
    with tempfile.TemporaryDirectory(prefix="cloud-p2p-wrk-") as tmp:
        body = Path(tmp) / "body.png"
        body.write_bytes(tagged_png(make_png_parts(size), f"wrk-{tag}"))
        env = {**os.environ, "WRK_BODY": str(body), "WRK_TAG": tag, "WRK_TOKEN": token or ""}
        seconds = max(1, round(duration_s))
        cmd = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
               "--timeout", "60s", "--latency", "-s", str(SCRIPT), f"http://{host}:{port}"]
        try:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True,
                               timeout=seconds + 30)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"wrk did not finish within {seconds + 30} s") from exc
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return parse_output(r.stdout, size)
