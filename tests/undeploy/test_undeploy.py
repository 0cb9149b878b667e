"""playbooks/undeploy.yml on the lab's real hosts: the service, its software, its config and
its firewall rules go, the images stay (unless asked), a second run changes nothing, and a
deploy afterwards serves the kept images again. ./run-tests runs this last, after testinfra
(it takes the deployment down); the tests run top to bottom against the same hosts."""

from __future__ import annotations

import hashlib
import socket
import urllib.request

import orjson
import pytest

from cloudlab import hosts, inventory
from cloudlab.cli import node_hosts
from cloudlab.plan import HostPlan
from tests.lab.test_deploy import playbook, recap

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not inventory.INVENTORY.exists(),
                       reason="the lab is down (python -m cloudlab up)"),
]

IMAGES = "/var/lib/cloud-p2p/shared_images"

# Run on a host: what is left of cloud-p2p there, as JSON.
STATE = f"""
import grp, json, os, pwd, subprocess
def run(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
def exists(kind, name):
    try:
        kind(name)
        return True
    except KeyError:
        return False
print(json.dumps({{
    "unit": os.path.exists("/etc/systemd/system/cloud-p2p.service"),
    "active": run("systemctl", "is-active", "cloud-p2p"),
    "software": os.path.exists("/opt/cloud-p2p"),
    "config": os.path.exists("/etc/cloud-p2p"),
    "state": os.path.exists("/var/lib/cloud-p2p"),
    "images": sorted(e.name for e in os.scandir("{IMAGES}") if e.is_file())
              if os.path.isdir("{IMAGES}") else None,
    "user": exists(pwd.getpwnam, "cloud-p2p") or exists(grp.getgrnam, "cloud-p2p"),
    "ufw": run("ufw", "status"),
}}))
"""


def state(h: HostPlan) -> dict[str, object]:
    r = hosts.ssh(h, f"python3 -c '{STATE}'")
    assert r.returncode == 0, r.stderr
    return orjson.loads(r.stdout)  # type: ignore[no-any-return]


def cluster_ports() -> list[int]:
    return [7000 + h.n for h in node_hosts()]


def refused_or_dropped(h: HostPlan, port: int) -> bool:
    try:
        socket.create_connection((h.address, port), timeout=2).close()
    except OSError:  # refused, or dropped by ufw (a timeout)
        return True
    return False


@pytest.fixture(scope="module")
def before() -> dict[str, dict[str, object]]:
    """Each host's state while deployed (after the stress run: it holds images)."""
    return {h.name: state(h) for h in node_hosts()}


def test_undeploy_removes_the_service_and_keeps_the_images(
        before: dict[str, dict[str, object]]) -> None:
    assert all(s["active"] == "active" and s["images"] for s in before.values()), before
    rc, out, _ = playbook("playbooks/undeploy.yml")
    assert rc == 0, out[-3000:]
    for h in node_hosts():
        s = state(h)
        assert not s["unit"] and s["active"] != "active", s
        assert not s["software"] and not s["config"], s
        assert s["images"] == before[h.name]["images"], "the images must stay"
        assert s["user"], "the user that owns the images stays with them"
        ufw = str(s["ufw"])
        assert "Status: active" in ufw and "22/tcp" in ufw, ufw  # SSH is never locked out
        for port in cluster_ports():
            assert f"{port}/tcp" not in ufw, ufw
        assert refused_or_dropped(h, 7000 + h.n)


def test_undeploy_again_changes_nothing() -> None:
    rc, out, _ = playbook("playbooks/undeploy.yml")
    assert rc == 0, out[-3000:]
    changed = {h: r["changed"] for h, r in recap(out).items()}
    assert changed and all(c == 0 for c in changed.values()), changed


def test_a_deploy_afterwards_serves_the_kept_images(
        before: dict[str, dict[str, object]]) -> None:
    rc, out, _ = playbook("playbooks/deploy.yml")
    assert rc == 0, out[-3000:]
    assert "cluster ready" in out
    h1, h3 = node_hosts()[0], node_hosts()[-1]
    name = str(before[h3.name]["images"][0])  # type: ignore[index]
    on_disk = hosts.ssh(h3, f"sha256sum {IMAGES}/{name}").stdout.split()[0]
    # Asked on h1: it finds the image on h3, which kept it through the undeploy.
    with urllib.request.urlopen(f"http://{h1.address}:{7000 + h1.n}/images/{name}",
                                timeout=10) as resp:
        assert resp.status == 200
        assert hashlib.sha256(resp.read()).hexdigest() == on_disk


def test_undeploy_with_remove_data_deletes_the_images_and_the_user() -> None:
    rc, out, _ = playbook("playbooks/undeploy.yml", "-e", "cloud_p2p_undeploy_remove_data=true")
    assert rc == 0, out[-3000:]
    for h in node_hosts():
        s = state(h)
        assert s["images"] is None and not s["state"] and not s["user"], s
        assert not s["unit"] and not s["software"] and not s["config"], s
