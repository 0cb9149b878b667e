"""The deployment story on the lab's real hosts: preflight, --check, deploy, idempotent
re-deploy, stress. Needs a running lab (`python -m cloudlab up`); ./run-tests starts one.
Order matters: the tests run top to bottom against the same hosts."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "lab" / "inventory.ini"
BIN = Path(sys.executable).parent

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not INVENTORY.exists(), reason="the lab is down (python -m cloudlab up)"),
]


def playbook(*args: str, inventory: Path = INVENTORY) -> tuple[int, str, float]:
    t0 = time.monotonic()
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={"PATH": f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
                               "ANSIBLE_FORCE_COLOR": "0", "HOME": "/root"})
    took = time.monotonic() - t0
    print(f"ansible-playbook {' '.join(args)}: rc={proc.returncode} in {took:.1f}s")
    return proc.returncode, proc.stdout + proc.stderr, took


def recap(output: str) -> dict[str, dict[str, int]]:
    rows = re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, re.MULTILINE)
    return {host: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", rest)}
            for host, rest in rows}


def test_preflight_refuses_a_duplicate_node_id_before_touching_hosts(tmp_path: Path) -> None:
    bad = tmp_path / "inventory.ini"
    bad.write_text(INVENTORY.read_text().replace("node_id=2", "node_id=1"))
    rc, out, _ = playbook("playbooks/deploy.yml", inventory=bad)
    assert rc != 0
    assert "node_id 1 used by more than one host (h1, h2)" in out
    assert "PLAY [Install and start" not in out


def test_preflight_refuses_a_cluster_wide_setting_set_for_one_host(tmp_path: Path) -> None:
    """config.json must be identical everywhere: an image directory set on h2 alone would give
    h2 a config of its own."""
    bad = tmp_path / "inventory.ini"
    bad.write_text(INVENTORY.read_text().replace("node_id=2",
                                                  "node_id=2 cloud_p2p_shared_dir=/srv/images"))
    rc, out, _ = playbook("playbooks/deploy.yml", inventory=bad)
    assert rc != 0
    assert "cloud_p2p_shared_dir differs between hosts (h1, h3 / h2)" in out
    assert "PLAY [Install and start" not in out


def test_preflight_refuses_settings_that_the_deploy_writes_itself() -> None:
    """shared_dir in cloud_p2p_settings would override cloud_p2p_shared_dir in config.json,
    past the check that guards a node's images; peers would override the inventory."""
    settings = '{"cloud_p2p_settings": {"shared_dir": "/srv/x", "peers": [], "heartbeat_ms": 200}}'
    rc, out, _ = playbook("playbooks/deploy.yml", "-e", settings)
    assert rc != 0
    assert "cloud_p2p_settings sets peers and shared_dir, which the deploy writes itself" in out
    assert "PLAY [Install and start" not in out


def test_check_mode_reports_changes_without_making_them() -> None:
    deployed = ("test -e /opt/cloud-p2p || test -e /etc/cloud-p2p "
                "|| test -e /etc/systemd/system/cloud-p2p.service")
    if any(lab_ssh(h, deployed).returncode == 0 for h in ("h1", "h2", "h3")):
        pytest.skip("the lab is deployed already: --check is tested on new hosts "
                    "(cloudlab down, then up)")
    rc, out, _ = playbook("playbooks/deploy.yml", "--check", "--diff")
    assert rc == 0, out[-3000:]
    hosts = {h: r for h, r in recap(out).items() if h.startswith("h")}
    assert hosts and all(r["failed"] == 0 and r["changed"] > 0 for r in hosts.values()), hosts
    for h in hosts:  # said, not done
        assert lab_ssh(h, deployed).returncode != 0, h


def test_first_deploy_ends_with_one_agreed_leader() -> None:
    rc, out, _ = playbook("playbooks/deploy.yml")
    assert rc == 0, out[-3000:]
    n = len([h for h in recap(out) if h.startswith("h")])
    assert f"cluster ready: leader is node {n} on every node" in out


def test_second_deploy_changes_nothing() -> None:
    rc, out, _ = playbook("playbooks/deploy.yml")
    assert rc == 0, out[-3000:]
    changed = {h: r["changed"] for h, r in recap(out).items()}
    assert changed and all(c == 0 for c in changed.values()), changed


def test_a_deploy_limited_to_some_hosts_keeps_the_inventory_check() -> None:
    """--limit h1 would skip the check (it runs on localhost) and render h1's config
    without it: refused before any change, with the limit that works."""
    rc, out, _ = playbook("playbooks/deploy.yml", "--limit", "h1",
                          "-e", '{"cloud_p2p_settings": {"max_image_bytes": 1048576}}')
    assert rc != 0 and "--limit 'h1,localhost'" in out, out[-3000:]
    assert recap(out)["h1"]["changed"] == 0
    rc, out, _ = playbook("playbooks/deploy.yml", "--limit", "h1,localhost")
    assert rc == 0 and recap(out)["h1"]["changed"] == 0, out[-3000:]


def test_a_mistyped_setting_is_refused_and_the_nodes_keep_running() -> None:
    rc, out, _ = playbook("playbooks/deploy.yml",
                          "-e", '{"cloud_p2p_settings": {"max_image_byte": 5}}')
    assert rc != 0 and "config.json rejected by cloud-p2p: config.json:" in out, out[-3000:]
    assert "unknown key(s) max_image_byte" in out and ".ansible/tmp" not in out
    from cloudlab import hosts
    from cloudlab.plan import HostPlan

    for n in (1, 2, 3):
        state = hosts.ssh(HostPlan(n), "systemctl is-active cloud-p2p").stdout.strip()
        assert state == "active", (n, state)


def test_stress_playbook_passes_and_checks_every_host() -> None:
    rc, out, _ = playbook("playbooks/stress.yml")
    assert rc == 0, out[-3000:]
    assert "RESULT: PASS" in out
    report = orjson.loads((ROOT / "reports" / "last-stress.json").read_bytes())
    assert report["summary"]["ok"] == 100
    for node, count in report["distribution"].items():
        assert f"(Node {node}): {count} requests" in out
        assert f"node {node}: {count} files, all with the right sha256" in out


def remote_client_inventory(tmp_path: Path, client: str = "h1") -> Path:
    """The lab's inventory with `client` as the stress client instead of the control
    machine."""
    remote = tmp_path / "inventory.ini"
    lines = INVENTORY.read_text().splitlines()
    at = lines.index("[client]")
    remote.write_text("\n".join([*lines[:at + 1], client, *lines[at + 2:]]) + "\n")
    return remote


def lab_client_host() -> str | None:
    """The lab's spare host, not a node (`cloudlab up --client-hosts 1`), if it has one."""
    from cloudlab.inventory import sections

    spare = sections(INVENTORY.read_text()).get("lab_clients", []) if INVENTORY.exists() else []
    return spare[0] if spare else None


def lab_ssh(host: str, command: str) -> subprocess.CompletedProcess[str]:
    from cloudlab import hosts
    from cloudlab.plan import HostPlan

    return hosts.ssh(HostPlan(int(host[1:])), command, timeout=30)


def test_stress_runs_from_a_remote_client_host(tmp_path: Path) -> None:
    """The client group may be a machine other than the control machine: here h1, which
    runs the client that deploy.yml installed there, uploads to every node through their
    firewalls, and its report comes back to the control machine."""
    remote = remote_client_inventory(tmp_path)
    report_file = ROOT / "reports" / "last-stress.json"
    before = orjson.loads(report_file.read_bytes())["run_id"] if report_file.exists() else None
    rc, out, _ = playbook("playbooks/stress.yml", "-e", "cloud_p2p_stress_requests=5",
                          inventory=remote)
    assert rc == 0, out[-3000:]
    assert "RESULT: PASS" in out
    assert "TASK [cloud_p2p_stress : Run the stress test]" in out and "changed: [h1]" in out
    report = orjson.loads(report_file.read_bytes())
    assert report["run_id"] != before
    assert report["summary"]["ok"] == 50


@pytest.mark.skipif(lab_client_host() is None,
                    reason="the lab has no client-only host (cloudlab up --client-hosts 1)")
def test_stress_runs_from_a_machine_that_is_not_a_node(tmp_path: Path) -> None:
    """The original guide's client "can be any of the 3 or a 4th machine": deploy.yml gives
    a client host that is not a node the client (and no service), stress.yml runs there, and
    undeploy.yml takes it off again."""
    spare = lab_client_host()
    assert spare is not None
    inventory = remote_client_inventory(tmp_path, spare)
    assert playbook("playbooks/undeploy.yml", "--limit", spare, inventory=inventory)[0] == 0
    rc, out, _ = playbook("playbooks/stress.yml", "-e", "cloud_p2p_stress_requests=3",
                          inventory=inventory)
    assert rc != 0 and f"cloud-p2p-client is missing on {spare}" in out, out[-3000:]
    rc, out, _ = playbook("playbooks/deploy.yml", inventory=inventory)
    assert rc == 0, out[-3000:]
    counts = recap(out)
    assert counts[spare]["failed"] == 0 and counts[spare]["changed"] > 0
    assert all(counts[h]["changed"] == 0 for h in ("h1", "h2", "h3")), counts
    rc, out, _ = playbook("playbooks/stress.yml", "-e", "cloud_p2p_stress_requests=3",
                          inventory=inventory)
    assert rc == 0 and "RESULT: PASS" in out, out[-3000:]
    assert f"changed: [{spare}]" in out
    # A client only: no service, no service user, and its own config copy works for anyone.
    assert lab_ssh(spare, "systemctl cat cloud-p2p.service").returncode != 0
    assert lab_ssh(spare, "id cloud-p2p").returncode != 0
    status = lab_ssh(spare, "runuser -u nobody -- /opt/cloud-p2p/venv/bin/cloud-p2p-client "
                            "--config /etc/cloud-p2p/config.json status")
    assert status.returncode == 0 and "leader" in status.stdout, status.stdout + status.stderr
    rc, out, _ = playbook("playbooks/undeploy.yml", "--limit", spare, inventory=inventory)
    assert rc == 0, out[-3000:]
    assert lab_ssh(spare, "test -e /opt/cloud-p2p || test -e /etc/cloud-p2p "
                          "|| test -e /var/tmp/cloud-p2p-stress").returncode != 0


@pytest.mark.skipif(lab_client_host() is None,
                    reason="the lab has no spare host (cloudlab up --client-hosts 1)")
def test_a_node_is_added_and_taken_out_again_in_the_documented_order(tmp_path: Path) -> None:
    """The spare host joins as node 4 (and leads); a deploy without it while it still runs is
    refused before any change; once it is undeployed, the deploy without it succeeds."""
    spare = lab_client_host()
    assert spare is not None
    lines = INVENTORY.read_text().splitlines()
    address = next(line.split("=", 1)[1] for line in lines if line.startswith(f"{spare} "))
    n = int(spare[1:])
    four = tmp_path / "four.ini"
    at = lines.index("[nodes]")
    four.write_text("\n".join([*lines[:at + 1], f"{spare} ansible_host={address} node_id={n}",
                               *lines[at + 1:]]) + "\n")
    rc, out, _ = playbook("playbooks/deploy.yml", inventory=four)
    assert rc == 0 and f"leader is node {n} on every node" in out, out[-3000:]
    rc, out, _ = playbook("playbooks/deploy.yml")  # without it, while it runs
    assert rc != 0 and f"{address}:{7000 + n}: taken out of the inventory, but still" in out, \
        out[-3000:]
    assert all(r["changed"] == 0 for r in recap(out).values()), recap(out)
    rc, out, _ = playbook("playbooks/undeploy.yml", "--limit", spare, inventory=four)
    assert rc == 0, out[-3000:]
    rc, out, _ = playbook("playbooks/deploy.yml")
    assert rc == 0 and "leader is node 3 on every node" in out, out[-3000:]
    lab_ssh(spare, "rm -rf /var/lib/cloud-p2p && userdel cloud-p2p")  # a spare host again


def put_image(node: int, name: str, data: bytes, token: str | None = None) -> int:
    """PUT an image to a lab node; the HTTP status."""
    import http.client

    from cloudlab.plan import HostPlan

    conn = http.client.HTTPConnection(HostPlan(node).address, 7000 + node, timeout=30)
    try:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        conn.request("PUT", f"/images/{name}", body=data, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_a_client_token_guards_uploads_and_the_stress_test_sends_it(tmp_path: Path) -> None:
    """cloud_p2p_client_token=true: every node wants the token on uploads, the stress
    client sends it (from the control machine and from a node), and turning it off again
    opens uploads again."""
    from nodesvc.stress import make_png_parts, tagged_png

    on = ("-e", "cloud_p2p_client_token=true")
    rc, out, _ = playbook("playbooks/deploy.yml", *on)
    assert rc == 0, out[-3000:]
    token = (ROOT / "secrets" / "client.token").read_text().strip()
    parts = make_png_parts(2000)
    assert put_image(2, "token-none.png", tagged_png(parts, "none")) == 401
    assert put_image(2, "token-wrong.png", tagged_png(parts, "wrong"), "0" * 48) == 401
    assert put_image(2, "token-right.png", tagged_png(parts, "right"), token) == 201
    for inventory in (INVENTORY, remote_client_inventory(tmp_path)):
        rc, out, _ = playbook("playbooks/stress.yml", *on, "-e", "cloud_p2p_stress_requests=3",
                              inventory=inventory)
        assert rc == 0 and "RESULT: PASS" in out, out[-3000:]
    rc, out, _ = playbook("playbooks/deploy.yml")
    assert rc == 0, out[-3000:]
    assert put_image(3, "token-off.png", tagged_png(parts, "off")) == 201


def test_ufw_drops_a_port_that_is_not_allowed() -> None:
    """A listener on 8080 answers inside the host, but the firewall drops it from outside,
    while the cluster port is reachable."""
    import socket

    from cloudlab import hosts
    from cloudlab.plan import HostPlan

    h = HostPlan(1)
    start = hosts.ssh(h, "systemd-run --unit=probe-8080 --property=RuntimeMaxSec=60 "
                         "python3 -m http.server 8080 --bind 0.0.0.0")
    assert start.returncode == 0, start.stderr
    try:
        inside = ""
        for _ in range(20):
            inside = hosts.ssh(h, "python3 -c \"import urllib.request as u;"
                                  "print(u.urlopen('http://127.0.0.1:8080/').status)\"").stdout
            if "200" in inside:
                break
            time.sleep(0.2)
        assert "200" in inside  # the listener is really there
        with pytest.raises(TimeoutError):
            socket.create_connection((h.address, 8080), timeout=2).close()
        socket.create_connection((h.address, 7001), timeout=2).close()
    finally:
        hosts.ssh(h, "systemctl stop probe-8080")
