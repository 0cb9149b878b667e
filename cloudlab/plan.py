"""Where everything of the lab lives: names, addresses, paths (pure, no I/O)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

STATE_DIR = Path("/var/lib/cloud-p2p-lab")       # per-host root filesystems, PIDs, logs, key
CACHE_DIR = Path("/var/cache/cloud-p2p-lab")     # the built image, reused by every up
SUBNET = ipaddress.IPv4Network("10.213.0.0/24")  # the lab's own; nothing else is routed there
BRIDGE = "cp2p-br0"
MAX_HOSTS = 9


@dataclass(frozen=True)
class HostPlan:
    n: int

    @property
    def name(self) -> str:
        return f"h{self.n}"

    @property
    def netns(self) -> str:
        return f"cp2p-h{self.n}"

    @property
    def veth(self) -> str:
        return f"cp2p-v{self.n}"   # the machine's end; the host's end is renamed eth0

    @property
    def address(self) -> str:
        return str(SUBNET.network_address + 10 + self.n)

    @property
    def dir(self) -> Path:
        return STATE_DIR / self.name

    @property
    def rootfs(self) -> Path:
        return self.dir / "root"

    @property
    def pid_file(self) -> Path:
        return self.dir / "nspawn.pid"

    @property
    def log_file(self) -> Path:
        return self.dir / "console.log"


def gateway() -> str:
    """The machine's address on the bridge, from which Ansible reaches the hosts."""
    return str(SUBNET.network_address + 1)


def hosts(count: int) -> list[HostPlan]:
    if not 1 <= count <= MAX_HOSTS:
        raise ValueError(f"the lab has 1 to {MAX_HOSTS} hosts, not {count}")
    return [HostPlan(n) for n in range(1, count + 1)]
