"""Client library and the `cloud-p2p-client` command.

The client finds the nodes in the same config.json as the nodes, sends uploads to the leader
it last saw (any node would do: followers pass uploads on), and retries on another node when a
node is down or answers 503 during a leader change. Retrying is safe: an upload of the same
name and bytes is idempotent (200, no second copy).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import stat
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from nodesvc.auth import check_token
from nodesvc.config import DEFAULTS, ConfigError, Peer, load_config
from nodesvc.http import HttpClient, PeerUnreachable, Response
from nodesvc.storage import valid_name


@dataclass
class UploadResult:
    name: str
    status: int
    node: int | None
    sha256: str | None
    bytes: int
    attempts: int
    latency_ms: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in (200, 201)


class Cluster:
    """The nodes of one config.json, seen from a client."""

    def __init__(self, peers: Sequence[Peer], *, deadline: float = 20.0,
                 pool_size: int = 16, token: bytes | None = None,
                 max_image_bytes: int = DEFAULTS["max_image_bytes"]) -> None:
        self.peers = {p.id: p for p in peers}
        self.max_image_bytes = max_image_bytes  # the config's: larger uploads are refused
        self.headers = [("authorization", f"Bearer {token.decode()}")] if token else []
        self.order = sorted(self.peers, reverse=True)  # bully: the highest id usually leads
        self.deadline = deadline
        self.http = HttpClient(connect_timeout=1.0, max_idle=pool_size)
        self.leader: int | None = None

    async def close(self) -> None:
        await self.http.close()

    async def request(self, node: int, method: str, target: str, body: bytes = b"",
                      timeout: float = 30.0, expect_continue: float | None = None) -> Response:
        peer = self.peers[node]
        return await self.http.request(peer.host, peer.port, method, target, body,
                                       self.headers, timeout=timeout,
                                       expect_continue=expect_continue)

    async def status_all(self) -> dict[int, dict[str, object] | str]:
        """Each node's /status, or the reason it could not be read."""
        async def one(node: int) -> dict[str, object] | str:
            try:
                resp = await self.request(node, "GET", "/status", timeout=2.0)
            except PeerUnreachable as exc:  # short: the table has the address already
                if exc.refused:
                    return "unreachable (refused)"
                return f"unreachable ({exc.reason[:40]})"
            if resp.status != 200:
                return f"HTTP {resp.status}"
            data = orjson.loads(resp.body)
            return data if isinstance(data, dict) else "bad status"
        results = await asyncio.gather(*(one(n) for n in self.peers))
        return dict(zip(self.peers, results, strict=True))

    def _candidates(self) -> list[int]:
        first = [self.leader] if self.leader is not None else []
        return first + [n for n in self.order if n != self.leader]

    async def upload(self, name: str, data: bytes) -> UploadResult:
        t0 = time.monotonic()
        attempts = 0
        last_error = "no node answered"
        delay = 0.05
        while True:
            for node in self._candidates():
                attempts += 1
                try:
                    # "100 Continue" within a second proves the node is alive before the
                    # body is sent; a paused or cut-off node is left after one second.
                    resp = await self.request(node, "PUT", f"/images/{name}", data,
                                              timeout=attempt_timeout(len(data)),
                                              expect_continue=1.0)
                except PeerUnreachable as exc:
                    last_error = str(exc)
                    if self.leader == node:
                        self.leader = None
                    continue
                if resp.status == 503:
                    last_error = _error_text(resp)
                    continue
                result = _result(name, resp, attempts, t0, len(data))
                if result.ok and self.leader is None:
                    self.leader = node
                return result
            if time.monotonic() - t0 + delay > self.deadline:
                waited = time.monotonic() - t0
                return UploadResult(name, 0, None, None, len(data), attempts, waited * 1000,
                                    f"no node took it in {waited:.0f} s ({attempts} attempts "
                                    f"on {len(self.peers)} nodes); last: {last_error}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def get(self, name: str) -> tuple[int, bytes]:
        """The image's bytes from any node (each node finds it anywhere in the cluster). A
        503 (the node holding it could not be asked: down, restarting) is retried until
        the deadline; a 404 means every node answered and none holds it."""
        t0, delay = time.monotonic(), 0.05
        last: Response | None = None
        while True:
            for node in self._candidates():
                try:
                    resp = await self.request(node, "GET", f"/images/{name}")
                except PeerUnreachable:
                    continue
                if resp.status == 200:
                    return 200, resp.body
                last = resp
                if resp.status in (400, 404):
                    return resp.status, resp.body
            if time.monotonic() - t0 + delay > self.deadline:
                return (last.status, last.body) if last else (0, b"")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def find_leader(self) -> int | None:
        for info in (await self.status_all()).values():
            if isinstance(info, dict) and isinstance(info.get("leader"), int):
                self.leader = int(info["leader"])  # type: ignore[arg-type]
                return self.leader
        return None


def attempt_timeout(size: int) -> float:
    """How long one upload attempt may take before the client tries another node: long
    enough for the body at 8 MiB/s (a healthy cluster answers a 64 KiB upload in tens of
    milliseconds), short enough that a node that went silent mid-request (power cut,
    partition: no answer at all, unlike a dead process) costs about a second and a half.
    Retrying is safe: uploads are idempotent."""
    return 1.5 + size / (8 * 2**20)


def _error_text(resp: Response) -> str:
    try:
        data = orjson.loads(resp.body)
        return f"HTTP {resp.status}: {data.get('error')}: {data.get('detail')}"
    except (orjson.JSONDecodeError, AttributeError):
        return f"HTTP {resp.status}"


def _result(name: str, resp: Response, attempts: int, t0: float, size: int) -> UploadResult:
    latency = (time.monotonic() - t0) * 1000
    if resp.status in (200, 201):
        data = orjson.loads(resp.body)
        return UploadResult(name, resp.status, data.get("node"), data.get("sha256"),
                            data.get("bytes", size), attempts, latency)
    return UploadResult(name, resp.status, None, None, size, attempts, latency,
                        _error_text(resp))


# ---- the command ----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cloud-p2p-client",
        description="Upload, fetch and stress-test images on a cloud-p2p cluster.")
    p.add_argument("--config", type=Path,
                   help="the cluster's config.json (default: $CONFIG_FILE, else ./config.json)")
    p.add_argument("--token-file", type=Path,
                   help="client token for clusters that require one "
                        "(default: $CLOUD_P2P_TOKEN_FILE)")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upload", help="upload image files (name = file name)")
    up.add_argument("files", nargs="+", type=Path)
    up.add_argument("--name", help="store under this name (one file only)")
    get = sub.add_parser("get", help="fetch an image by name")
    get.add_argument("name")
    get.add_argument("-o", "--output", type=Path,
                     help="write here (default, or -: stdout)")
    sub.add_parser("status", help="a table of the nodes and their state")
    st = sub.add_parser("stress", help="the stress test: concurrent uploads and a report")
    from nodesvc.stress import add_arguments
    add_arguments(st)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = args.config or Path(os.environ.get("CONFIG_FILE", "config.json"))
    try:
        config = load_config(path, "give the cluster's config.json with --config"
                             if args.config else "use --config, or set CONFIG_FILE")
    except ConfigError as exc:
        print(f"cloud-p2p-client: error: {exc}", file=sys.stderr)
        return 2
    token_file = args.token_file or os.environ.get("CLOUD_P2P_TOKEN_FILE")
    token = None
    if token_file:
        try:
            token = check_token(Path(token_file).read_bytes().strip(), str(token_file))
        except OSError as exc:
            print(f"cloud-p2p-client: error: {token_file}: {exc.strerror}", file=sys.stderr)
            return 2
        except ValueError as exc:
            print(f"cloud-p2p-client: error: {exc}", file=sys.stderr)
            return 2
    if args.command == "stress":
        from nodesvc.stress import run_command
        return run_command(config, args, token)
    handlers = {"upload": _upload_cmd, "get": _get_cmd, "status": _status_cmd}
    try:
        return asyncio.run(handlers[args.command](
            Cluster(config.peers, token=token, max_image_bytes=config.max_image_bytes), args))
    except KeyboardInterrupt:
        return 130


def check_upload(path: Path, name: str, max_bytes: int, named: bool) -> str | None:
    """What is wrong with uploading `path` as `name` (None: nothing), found before anything
    is sent: an invalid name, a file that cannot be read, is empty or is over the cluster's
    max_image_bytes (a regular file's size is known without reading it)."""
    if not valid_name(name):
        hint = "" if named else "; give another with --name"
        return (f"{name!r} is not a valid image name ([A-Za-z0-9][A-Za-z0-9._-]{{0,254}})"
                f"{hint}")
    try:
        st = path.stat()
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if stat.S_ISDIR(st.st_mode):
        return f"{path}: Is a directory"
    if stat.S_ISREG(st.st_mode):
        if st.st_size == 0:
            return f"{path}: empty file (an image needs at least one byte)"
        if st.st_size > max_bytes:
            return (f"{path}: {st.st_size} bytes, over the cluster's max_image_bytes "
                    f"({max_bytes})")
    return None


async def _upload_cmd(cluster: Cluster, args: argparse.Namespace) -> int:
    if args.name is not None and len(args.files) > 1:
        await cluster.close()
        print("cloud-p2p-client: error: --name needs exactly one file", file=sys.stderr)
        return 2
    jobs = [(path, args.name if args.name is not None else path.name) for path in args.files]
    for path, name in jobs:  # every file checked before the first is sent
        problem = check_upload(path, name, cluster.max_image_bytes, args.name is not None)
        if problem is not None:
            await cluster.close()
            print(f"cloud-p2p-client: error: {problem}", file=sys.stderr)
            return 2
    failed = 0
    for path, name in jobs:
        try:
            data = path.read_bytes()
        except OSError as exc:
            await cluster.close()
            print(f"cloud-p2p-client: error: {path}: {exc.strerror}", file=sys.stderr)
            return 2
        r = await cluster.upload(name, data)
        if r.ok:
            what = "stored" if r.status == 201 else "already stored"
            print(f"{name}: {what} on node {r.node} ({r.bytes} bytes, sha256 {r.sha256}, "
                  f"{r.latency_ms:.1f} ms)")
        else:
            failed += 1
            hint = " (this cluster wants its client token: --token-file FILE)" \
                if r.status == 401 and not cluster.headers else ""
            print(f"{name}: FAILED: {r.error}{hint}", file=sys.stderr)
    await cluster.close()
    return 1 if failed else 0


async def _get_cmd(cluster: Cluster, args: argparse.Namespace) -> int:
    if not valid_name(args.name):
        await cluster.close()
        print(f"cloud-p2p-client: error: {args.name!r} is not a valid image name "
              "([A-Za-z0-9][A-Za-z0-9._-]{0,254})", file=sys.stderr)
        return 2
    status, body = await cluster.get(args.name)
    await cluster.close()
    if status != 200:
        reason = "not found" if status == 404 else \
            _error_text(Response(status, body)) if status else "no node answered"
        print(f"cloud-p2p-client: error: {args.name}: {reason}", file=sys.stderr)
        return 1
    if args.output and str(args.output) != "-":
        try:
            args.output.write_bytes(body)
        except OSError as exc:
            print(f"cloud-p2p-client: error: cannot write {args.output}: "
                  f"{exc.strerror or exc}", file=sys.stderr)
            return 2
        print(f"{args.name}: {len(body)} bytes -> {args.output}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(body)
    return 0


def format_status(peers: dict[int, Peer], infos: dict[int, dict[str, object] | str]) -> str:
    rows = [("NODE", "ADDRESS", "STATE", "ROLE", "LEADER", "TERM", "STORED", "CONFIG")]
    same_config = _configs_agree(infos)
    for node, info in sorted(infos.items()):
        addr = peers[node].address
        if isinstance(info, str):
            rows.append((str(node), addr, info, "-", "-", "-", "-", "-"))
            continue
        # On a mismatch each node's config hash shows which one is the odd one out.
        cfg = "ok" if same_config else f"MISMATCH {str(info.get('config_hash'))[:8]}"
        rows.append((str(node), addr, "up", str(info.get("role")), str(info.get("leader")),
                     str(info.get("term")), str(info.get("stored")), cfg))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    for node, info in sorted(infos.items()):
        peers_seen = info.get("peers") if isinstance(info, dict) else None
        for peer in peers_seen if isinstance(peers_seen, list) else []:
            if isinstance(peer, dict) and peer.get("reachable") is False and peer.get("alive"):
                lines.append(f"Link: node {node} cannot reach node {peer.get('id')}, "
                             "whose messages arrive (blocked in one direction?)")
    for node, info in sorted(infos.items()):
        named = info.get("leader") if isinstance(info, dict) else None
        if isinstance(named, int) and named not in peers:
            lines.append(f"Config: node {node} follows node {named}, which this client's "
                         "config.json does not list (a stale config? use the cluster's)")
    leader = _agreed_leader(infos)
    if leader is not None:
        lines.append(f"\nLeader: node {leader} (all reachable nodes agree)")
    else:
        views = {node: i.get("leader") for node, i in sorted(infos.items())
                 if isinstance(i, dict)}
        if not views:
            lines.append("\nLeader: unknown (no node answered)")
        else:
            said = ", ".join(f"node {node}: {'none' if view is None else view}"
                             for node, view in views.items())
            lines.append(f"\nLeader: NOT AGREED ({said})")
    return "\n".join(lines)


def _agreed_leader(infos: dict[int, dict[str, object] | str]) -> object | None:
    """The leader every answering node names, or None (none named, or not the same one)."""
    leaders = {i.get("leader") for i in infos.values() if isinstance(i, dict)}
    return leaders.pop() if len(leaders) == 1 else None


def _configs_agree(infos: dict[int, dict[str, object] | str]) -> bool:
    """All answering nodes report one config hash and none sees a peer with another."""
    up = [i for i in infos.values() if isinstance(i, dict)]
    return len({i.get("config_hash") for i in up}) <= 1 \
        and not any(i.get("config_mismatch") for i in up)


def healthy(infos: dict[int, dict[str, object] | str]) -> bool:
    """Every node answers, all name the same leader, one this client's config lists, and all
    run the same config (a node with other settings, e.g. a half-done deploy, says CONFIG
    MISMATCH)."""
    answering = all(isinstance(i, dict) for i in infos.values())
    leader = _agreed_leader(infos)
    return answering and leader is not None and _configs_agree(infos) \
        and leader in infos  # (a leader this client's config does not list: a stale config)


async def _status_cmd(cluster: Cluster, args: argparse.Namespace) -> int:
    """0: healthy(); 1: a node does not answer, the nodes do not agree on a leader
    (Leader: NOT AGREED, e.g. a split brain) or follow one this client does not know of
    (a stale config.json), or their configs differ (CONFIG MISMATCH)."""
    infos = await cluster.status_all()
    await cluster.close()
    print(format_status(cluster.peers, infos))
    return 0 if healthy(infos) else 1


if __name__ == "__main__":
    sys.exit(main())
