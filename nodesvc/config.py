"""Load and validate config.json and the environment.

Every mistake a user can make here ends the program with one clear line and exit status 2
before any port is bound (see `ConfigError`). The parsed config is hashed so that peers can
tell when they run with different files.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from nodesvc.auth import check_token, load_secret
from nodesvc.digits import ascii_digits

DEFAULTS: dict[str, int] = {
    "max_image_bytes": 32 * 1024 * 1024,
    "heartbeat_ms": 150,
    "leader_timeout_ms": 600,
    "election_timeout_ms": 300,
    "client_timeout_ms": 10_000,   # a connection must send its request head within this
    "max_connections": 1024,       # more open connections than this are closed at once
}
MIN_CONNECTIONS_PER_NODE = 16  # max_connections must be at least this times the node count
DURABILITY = ("fsync", "none")  # fsync: file and directory synced before 201 (the default)
KNOWN_KEYS = {"peers", "shared_dir", "durability", *DEFAULTS}
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")  # one DNS label


class ConfigError(Exception):
    """A user mistake in the config or the environment; its text is the whole message."""


@dataclass(frozen=True)
class Peer:
    id: int
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Config:
    peers: tuple[Peer, ...]
    shared_dir: str
    max_image_bytes: int = DEFAULTS["max_image_bytes"]
    heartbeat_ms: int = DEFAULTS["heartbeat_ms"]
    leader_timeout_ms: int = DEFAULTS["leader_timeout_ms"]
    election_timeout_ms: int = DEFAULTS["election_timeout_ms"]
    client_timeout_ms: int = DEFAULTS["client_timeout_ms"]
    max_connections: int = DEFAULTS["max_connections"]
    durability: str = "fsync"
    hash: str = field(default="", compare=False)

    def peer(self, node_id: int) -> Peer:
        for p in self.peers:
            if p.id == node_id:
                return p
        raise KeyError(node_id)

    @property
    def ids(self) -> list[int]:
        return [p.id for p in self.peers]


@dataclass(frozen=True)
class NodeSettings:
    """What one node process runs with: the cluster config plus its own environment."""

    config: Config
    node_id: int
    shared_dir: Path
    bind_host: str
    bind_port: int
    config_file: Path
    secret: bytes | None = None        # CLUSTER_SECRET_FILE: signs peer messages
    client_token: bytes | None = None  # CLIENT_TOKEN_FILE: required on uploads


def parse_address(text: object, where: str) -> tuple[str, int]:
    """Split "host:port" (IPv6 as "[::1]:7001"); raise ConfigError naming `where`."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(f'{where}: address must be "host:port", got {text!r}')
    host, _, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ConfigError(f"{where}: address {text!r} has no host")
    if not ascii_digits(port_text) or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"{where}: address {text!r} has no valid port (1-65535)")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{where}: address {text!r} has an invalid host") from None
    elif not all(_LABEL.fullmatch(part) for part in host.split(".")):
        raise ConfigError(f"{where}: address {text!r} has an invalid host")
    return host, int(port_text)


def _positive_int(data: Mapping[str, Any], key: str, source: str) -> int:
    value = data.get(key, DEFAULTS[key])
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{source}: {key} must be a positive integer, got "
                          f"{json.dumps(value)}")  # (as config.json spells it: true, not True)
    return value


def config_hash(data: Mapping[str, Any]) -> str:
    """A short digest of the parsed config (sorted keys), identical for identical meaning."""
    canonical = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:16]


def _line_col(text: str, pos: int) -> tuple[int, int]:
    """1-based line and column of the character at `pos`."""
    return text.count("\n", 0, pos) + 1, pos - (text.rfind("\n", 0, pos) + 1) + 1


def parse_config(raw: bytes, source: str = "config.json") -> Config:
    """Parse the bytes of config.json; raise ConfigError with a precise message."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # (orjson would say where only as "position 0")
        line, col = _line_col(raw.decode("utf-8", "replace"),
                              len(raw[: exc.start].decode("utf-8")))
        raise ConfigError(f"{source}: not UTF-8 text: byte 0x{raw[exc.start]:02x} at line "
                          f"{line}, column {col}") from None
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        line, col = _line_col(text, exc.pos)  # users want line and column, not a position
        raise ConfigError(
            f"{source}: invalid JSON at line {line}, column {col}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a JSON object")
    unknown = sorted(set(data) - KNOWN_KEYS)
    if unknown:
        known = ", ".join(sorted(KNOWN_KEYS))
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)} (known: {known})")
    peers_raw = data.get("peers")
    if not isinstance(peers_raw, list) or not peers_raw:
        raise ConfigError(f"{source}: \"peers\" must be a non-empty list")
    peers: list[Peer] = []
    seen_ids: set[int] = set()
    seen_addresses: set[tuple[str, int]] = set()
    for i, entry in enumerate(peers_raw):
        where = f"{source}: peers[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"id", "address"}:
            raise ConfigError(f'{where} must be an object with exactly "id" and "address"')
        pid = entry["id"]
        if isinstance(pid, bool) or not isinstance(pid, int) or pid < 0:
            raise ConfigError(f"{where}: id must be a non-negative integer, got {pid!r}")
        if pid in seen_ids:
            raise ConfigError(f"{where}: duplicate id {pid}")
        host, port = parse_address(entry["address"], where)
        if (host, port) in seen_addresses:
            raise ConfigError(f"{where}: duplicate address {entry['address']}")
        seen_ids.add(pid)
        seen_addresses.add((host, port))
        peers.append(Peer(pid, host, port))
    shared_dir = data.get("shared_dir", "./shared_images")
    if not isinstance(shared_dir, str) or not shared_dir:
        raise ConfigError(f'{source}: "shared_dir" must be a non-empty string')
    settings = {key: _positive_int(data, key, source) for key in DEFAULTS}
    if settings["leader_timeout_ms"] <= settings["heartbeat_ms"]:
        raise ConfigError(f"{source}: leader_timeout_ms must be larger than heartbeat_ms")
    least = MIN_CONNECTIONS_PER_NODE * len(peers)
    if settings["max_connections"] < least:
        # Each peer may keep max_connections / nodes connections to a node; below this the
        # peers' own connections can take every slot and lock clients out.
        raise ConfigError(f"{source}: max_connections must be at least {least} for "
                          f"{len(peers)} nodes ({MIN_CONNECTIONS_PER_NODE} per node)")
    durability = data.get("durability", "fsync")
    if durability not in DURABILITY:
        raise ConfigError(f'{source}: "durability" must be one of {", ".join(DURABILITY)}, '
                          f"got {durability!r}")
    peers.sort(key=lambda p: p.id)
    # Hash the meaning (sorted peers, defaults filled), not the file's formatting or order.
    meaning = {"peers": [[p.id, p.address] for p in peers], "shared_dir": shared_dir,
               "durability": durability, **settings}
    return Config(peers=tuple(peers), shared_dir=shared_dir, hash=config_hash(meaning),
                  durability=durability, **settings)


def load_config(path: Path, how_to_name: str = "set CONFIG_FILE") -> Config:
    """`how_to_name`: how the user gives another path (for the not-found message)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found ({how_to_name})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    return parse_config(raw, str(path))


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{directory}: cannot create shared dir: {exc.strerror}") from None
    except ValueError as exc:  # a NUL byte in the path
        raise ConfigError(f"{str(directory)!r}: not a usable shared dir: {exc}") from None
    if not directory.is_dir():
        raise ConfigError(f"{directory}: shared dir is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"{directory}: shared dir is not writable by this user")


def load_settings(env: Mapping[str, str]) -> NodeSettings:
    """Everything a node needs from its environment; raise ConfigError on any bad input."""
    config_file = Path(env.get("CONFIG_FILE", "config.json"))
    config = load_config(config_file)
    node_text = env.get("NODE_ID")
    if node_text is None or not node_text.strip():
        raise ConfigError("NODE_ID is not set (e.g. NODE_ID=1)")
    if not ascii_digits(node_text.strip()):
        raise ConfigError(f"NODE_ID must be a non-negative integer, got {node_text!r}")
    node_id = int(node_text)
    if node_id not in config.ids:
        raise ConfigError(f"NODE_ID={node_id} is not in {config_file} peers {config.ids}")
    # Relative paths are relative to the working directory, as in the seed.
    shared_dir = Path(env.get("SHARED_DIR") or config.shared_dir).absolute()
    _check_writable(shared_dir)
    me = config.peer(node_id)
    bind_host, bind_port = me.host, me.port
    if env.get("BIND"):
        bind_host, bind_port = parse_address(env["BIND"], "BIND")
    secrets: dict[str, bytes | None] = {}
    for var, what, check in (("CLUSTER_SECRET_FILE", "the cluster secret", None),
                             ("CLIENT_TOKEN_FILE", "the client token", check_token)):
        secrets[var] = None
        if env.get(var):
            try:
                secrets[var] = load_secret(env[var], what)
                if check is not None:  # (the token goes in a header; the secret never does)
                    check(secrets[var] or b"", env[var])
            except ValueError as exc:
                raise ConfigError(f"{var}={exc}") from None
    return NodeSettings(config, node_id, shared_dir, bind_host, bind_port, config_file,
                        secrets["CLUSTER_SECRET_FILE"], secrets["CLIENT_TOKEN_FILE"])
