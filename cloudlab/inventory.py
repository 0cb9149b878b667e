"""The Ansible inventory of the running lab (pure text)."""

from __future__ import annotations

from pathlib import Path

from cloudlab.plan import HostPlan

INVENTORY = Path(__file__).resolve().parents[1] / "lab" / "inventory.ini"


def render(hosts: list[HostPlan], key: Path, python: str, spare: int = 0) -> str:
    """The first `len(hosts) - spare` hosts are nodes; the last `spare` are listed apart, in
    `lab_clients`, for a test to make them client-only machines."""
    nodes, clients = hosts[:len(hosts) - spare], hosts[len(hosts) - spare:]
    lines = ["# Written by `python -m cloudlab up`; deleted by `down`. Do not edit.", "[nodes]"]
    lines += [f"{h.name} ansible_host={h.address} node_id={h.n}" for h in nodes]
    lines += ["", "[lab_clients]"]
    lines += [f"{h.name} ansible_host={h.address}" for h in clients]
    lines += ["", "[lab:children]", "nodes", "lab_clients",
              "", "[lab:vars]", "ansible_user=root",
              f"ansible_ssh_private_key_file={key}",
              "ansible_ssh_common_args='-o StrictHostKeyChecking=no "
              "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR'",
              "ansible_python_interpreter=/usr/bin/python3",
              "", "[client]",
              f"localhost ansible_connection=local ansible_python_interpreter={python}", ""]
    return "\n".join(lines)


def sections(text: str) -> dict[str, list[str]]:
    """The first word of each line under each [section] (for host groups: the host names)
    of an inventory written by `render`."""
    found: dict[str, list[str]] = {}
    names: list[str] = []
    for line in text.splitlines():
        if line.startswith("["):
            names = found.setdefault(line.strip()[1:-1], [])
        elif line.strip() and not line.startswith("#"):
            names.append(line.split()[0])
    return found


def layout(text: str) -> tuple[int, int]:
    """(nodes, client-only hosts) listed in an inventory written by `render`."""
    found = sections(text)
    return len(found.get("nodes", [])), len(found.get("lab_clients", []))
