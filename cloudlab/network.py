"""The lab's network: one bridge on the machine, and per host a fresh network namespace
joined to it by a veth pair. No default route and no NAT: hosts reach only the lab."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cloudlab.plan import BRIDGE, SUBNET, HostPlan, gateway


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def link_exists(name: str) -> bool:
    return _ip("link", "show", name, check=False).returncode == 0


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def ensure_bridge() -> None:
    if not link_exists(BRIDGE):
        _ip("link", "add", BRIDGE, "type", "bridge")
    cidr = f"{gateway()}/{SUBNET.prefixlen}"
    if cidr not in _ip("-o", "addr", "show", "dev", BRIDGE).stdout:
        _ip("addr", "add", cidr, "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")


def fresh_netns(host: HostPlan) -> None:
    """A new namespace each time: ufw rules live in the namespace and must not survive."""
    remove_netns(host)
    _ip("netns", "add", host.netns)
    _ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
    _ip("link", "set", host.veth, "master", BRIDGE, "up")
    _ip("-n", host.netns, "addr", "add", f"{host.address}/{SUBNET.prefixlen}", "dev", "eth0")
    _ip("-n", host.netns, "link", "set", "eth0", "up")
    _ip("-n", host.netns, "link", "set", "lo", "up")


def set_link(host: HostPlan, up: bool) -> None:
    """Cut or restore a host's cable (for partition tests)."""
    _ip("link", "set", host.veth, "up" if up else "down")


def remove_netns(host: HostPlan) -> None:
    if link_exists(host.veth):
        _ip("link", "del", host.veth, check=False)
    if netns_exists(host.netns):
        _ip("netns", "del", host.netns, check=False)


def remove_bridge() -> None:
    if link_exists(BRIDGE):
        _ip("link", "del", BRIDGE, check=False)
