"""The lab command itself on real containers: idempotent up, a host that dies, down after a
crash. Runs before the deploy tests (file order) and leaves a fresh running lab behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cloudlab import hosts, inventory, network
from cloudlab.cli import existing_hosts
from cloudlab.plan import BRIDGE, HostPlan

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not inventory.INVENTORY.exists(),
                       reason="the lab is down (python -m cloudlab up)"),
]


def lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloudlab", *args], capture_output=True,
                          text=True, timeout=300)


def up_args() -> list[str]:
    """`up` for the lab as it is: its nodes and its client-only hosts, as listed."""
    nodes, clients = inventory.layout(inventory.INVENTORY.read_text())
    assert nodes + clients == len(existing_hosts())
    return ["up", "--hosts", str(nodes), "--client-hosts", str(clients)]


def test_up_again_changes_nothing_and_every_host_answers_over_ssh() -> None:
    pids = {h.n: hosts.pid_of(h) for h in existing_hosts()}
    r = lab(*up_args())
    assert r.returncode == 0 and "0 started" in r.stdout, r.stdout + r.stderr
    assert {h.n: hosts.pid_of(h) for h in existing_hosts()} == pids
    for h in existing_hosts():
        out = hosts.ssh(h, "hostname; systemctl is-system-running; ufw version | head -1")
        assert out.stdout.split()[:1] == [h.name], out
        assert out.stdout.split()[1] in ("running", "degraded")


def test_a_powered_off_host_is_seen_and_brought_back() -> None:
    again = up_args()
    victim = HostPlan(len(existing_hosts()))
    hosts.power_off(victim)
    assert hosts.pid_of(victim) is None
    r = lab("status")
    assert r.returncode == 3 and "stopped" in r.stdout
    r = lab(*again)
    assert r.returncode == 0 and "1 started" in r.stdout, r.stdout + r.stderr
    assert lab("status").returncode == 0


def test_stop_and_start_a_host_by_hand_keep_its_disk() -> None:
    victim = HostPlan(len(existing_hosts()))
    hosts.ssh(victim, "echo kept > /root/mark")
    for how in (["--power-cut"], []):
        r = lab("stop", str(victim.n), *how)
        assert r.returncode == 0 and hosts.pid_of(victim) is None, r.stdout + r.stderr
        assert lab("status").returncode == 3
        r = lab("start", str(victim.n))
        assert r.returncode == 0 and lab("status").returncode == 0, r.stdout + r.stderr
        assert hosts.ssh(victim, "cat /root/mark").stdout.strip() == "kept"
    r = lab("stop", "99")
    assert r.returncode == 2 and "no h99" in r.stderr


def test_down_after_a_crash_cleans_everything_and_up_works_again() -> None:
    again = up_args()
    crashed = HostPlan(1)
    hosts.power_off(crashed)          # as if the machine lost power mid-run
    network.remove_netns(crashed)     # and half of its network was already gone
    r = lab("down")
    assert r.returncode == 0, r.stderr
    assert not Path("/run/netns/cp2p-h1").exists()
    assert not network.link_exists(BRIDGE)
    assert not inventory.INVENTORY.exists()
    assert "cloud-p2p-lab" not in Path("/proc/self/mounts").read_text()
    r = lab(*again)
    assert r.returncode == 0, r.stdout + r.stderr
    assert lab("status").returncode == 0
    assert inventory.layout(inventory.INVENTORY.read_text()) == \
        (int(again[2]), int(again[4]))  # the same nodes and client-only hosts as before
