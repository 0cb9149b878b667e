"""Run a whole cluster on this machine: N node processes on 127.0.0.1 (the seed's
single-machine mode). Used by the integration tests, the benchmark, and as a quick demo:

    python -m nodesvc.localcluster            # 3 nodes on 7001-7003, stress 10x10, stop
    python -m nodesvc.localcluster --keep     # ... and keep them running until Ctrl+C
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from nodesvc.storage import valid_name


class LocalCluster:
    """Node processes started by us; stopped by their PIDs only."""

    def __init__(self, workdir: Path, ports: list[int], extra: dict[str, int] | None = None,
                 host: str = "127.0.0.1", secret: bool = True) -> None:
        self.workdir = workdir
        self.host = host
        self.ports = {i + 1: port for i, port in enumerate(ports)}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.config_file = workdir / "config.json"
        config = {"peers": [{"id": i, "address": f"{host}:{p}"} for i, p in self.ports.items()],
                  "shared_dir": "./shared_images", **(extra or {})}
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
        # A cluster secret, as the deploy makes one: peer messages are signed.
        self.secret_file: Path | None = None
        if secret:
            self.secret_file = workdir / "cluster.secret"
            self.secret_file.write_text(os.urandom(32).hex())
            self.secret_file.chmod(0o600)

    def shared_dir(self, node: int) -> Path:
        return self.workdir / f"node{node}" / "shared_images"

    def log_file(self, node: int) -> Path:
        return self.workdir / f"node{node}.log"

    def start(self, node: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        full_env = {**os.environ, "NODE_ID": str(node), "CONFIG_FILE": str(self.config_file),
                    "SHARED_DIR": str(self.shared_dir(node)), "PYTHONUNBUFFERED": "1",
                    **({"CLUSTER_SECRET_FILE": str(self.secret_file)} if self.secret_file
                       else {}),
                    **(env or {})}
        if "NOTIFY_SOCKET" not in (env or {}):
            full_env.pop("NOTIFY_SOCKET", None)  # we are not systemd for these children
        log = self.log_file(node).open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "nodesvc"], env=full_env,
                                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()
        self.procs[node] = proc
        return proc

    def wait_log(self, node: int, text: str, timeout: float = 3.0) -> str:
        """The node's log once it contains `text` (nodes write their log in batches, a few
        milliseconds late), or as it is after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_file(node).read_text() if self.log_file(node).exists() else ""
            if text in log or time.monotonic() > deadline:
                return log
            time.sleep(0.02)

    def start_all(self) -> None:
        for node in self.ports:
            self.start(node)

    def kill(self, node: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(node, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=10)

    def stop(self) -> None:
        for node in list(self.procs):
            proc = self.procs[node]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for node in list(self.procs):
            proc = self.procs.pop(node)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def request(self, node: int, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None,
                timeout: float = 10.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.ports[node], timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def status(self, node: int) -> dict[str, object] | None:
        try:
            code, body = self.request(node, "GET", "/status", timeout=1.0)
        except OSError:
            return None
        return orjson.loads(body) if code == 200 else None

    def leaders(self, nodes: list[int] | None = None) -> dict[int, object]:
        """Each running node's idea of the leader (None when it has none or is down)."""
        out: dict[int, object] = {}
        for node in nodes or list(self.procs):
            st = self.status(node)
            out[node] = st.get("leader") if st else None
        return out

    def wait_leader(self, expected: int | None = None, timeout: float = 10.0,
                    nodes: list[int] | None = None) -> int:
        """Wait until every running node names the same leader; return it."""
        deadline = time.monotonic() + timeout
        seen: dict[int, object] = {}
        while time.monotonic() < deadline:
            seen = self.leaders(nodes)
            values = set(seen.values())
            if len(values) == 1 and None not in values:
                leader = values.pop()
                assert isinstance(leader, int)
                if expected is None or leader == expected:
                    return leader
            time.sleep(0.02)
        raise TimeoutError(f"no agreed leader (expected {expected}) after {timeout}s: {seen}")

    def count(self, node: int) -> int:
        """How many images the node holds (names only: no file is read)."""
        d = self.shared_dir(node)
        if not d.is_dir():
            return 0
        return sum(1 for e in os.scandir(d) if e.is_file() and valid_name(e.name))

    def files(self, node: int) -> dict[str, bytes]:
        d = self.shared_dir(node)
        if not d.is_dir():
            return {}
        found = {}
        for p in d.iterdir():
            try:
                if p.is_file():
                    found[p.name] = p.read_bytes()
            except FileNotFoundError:  # a write's temporary file, renamed meanwhile
                continue
        return found

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nodesvc.localcluster", description=__doc__)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--base-port", type=int, default=7001)
    p.add_argument("--dir", type=Path, default=Path("local-cluster"),
                   help="config, logs and images go here (default ./local-cluster)")
    p.add_argument("--keep", action="store_true", help="keep the nodes running (Ctrl+C stops)")
    p.add_argument("--no-stress", action="store_true")
    args = p.parse_args(argv)
    ports = [args.base_port + i for i in range(args.nodes)]
    with LocalCluster(args.dir.absolute(), ports) as cluster:
        cluster.start_all()
        t0 = time.monotonic()
        leader = cluster.wait_leader(timeout=15)
        print(f"{args.nodes} nodes up, leader: node {leader} "
              f"(agreed {time.monotonic() - t0:.2f} s after start); logs in {args.dir}/")
        rc = 0
        if not args.no_stress:
            rc = subprocess.call([sys.executable, "-m", "nodesvc.client", "--config",
                                  str(cluster.config_file), "stress", "--json",
                                  str(args.dir / "stress-report.json")])
        if args.keep:
            print(f"Nodes running; try: cloud-p2p-client --config {cluster.config_file} status")
            # Stop on Ctrl+C or SIGTERM, even when started in the background (where a shell
            # leaves SIGINT ignored); leaving the `with` stops the nodes.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
        return rc


if __name__ == "__main__":
    sys.exit(main())
