"""deploy.yml's checks on the hosts before any change: clocks in sync, the state directory not
moved under a running node, the image directory not moved away from its images. Needs a
running lab (`python -m cloudlab up`) on which deploy.yml has run (tests/lab/test_deploy.py,
earlier in the run)."""

from __future__ import annotations

import os
import re

import pytest

from cloudlab import hosts
from cloudlab.plan import HostPlan
from tests.lab.test_deploy import INVENTORY, playbook, put_image, recap

NODES = [HostPlan(n) for n in (1, 2, 3)]

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not INVENTORY.exists(), reason="the lab is down (python -m cloudlab up)"),
]


def clock_message(out: str) -> str:
    found = re.search(r"Action failed: (clocks: .*)", out)
    assert found, out[-3000:]
    return found.group(1)


def named_offsets(msg: str) -> dict[str, int]:
    """The hosts a clock message names, with the offsets it gives them. The offset is measured
    from the middle of the interval in which Ansible read the host's clock (about a second over
    SSH), so it may be one off the injected skew; the test allows that."""
    head = msg.split(" (host minus control machine")[0].removeprefix("clocks: ")
    return {host: int(off) for host, off in re.findall(r"(h\d+) ([+-]\d+) s", head)}


def near(found: dict[str, int], expected: dict[str, int]) -> bool:
    return found.keys() == expected.keys() and all(
        abs(found[h] - expected[h]) <= 1 for h in expected)


def test_a_host_whose_clock_is_off_is_refused_before_any_change() -> None:
    """The lab's hosts share the machine's clock, so the offsets are injected into the hosts'
    readings: h2 two minutes ahead and h3 90 s behind are named with their offsets; h1, 3 s
    ahead, is within the default 5 s and is not named."""
    skew = '{"cloud_p2p_preflight_clock_test_skew": {"h1": 3, "h2": 120, "h3": -90}}'
    rc, out, _ = playbook("playbooks/deploy.yml", "-e", skew)
    assert rc != 0
    msg = clock_message(out)
    assert msg.startswith("clocks: h2 +1"), msg
    assert near(named_offsets(msg), {"h2": 120, "h3": -90}), msg
    assert "chrony" in msg and "systemd-timesyncd" in msg
    rows = recap(out)
    assert {h for h in rows if h.startswith("h")} == {"h1", "h2", "h3"}
    assert all(r["changed"] == 0 for r in rows.values()), rows
    assert "cloud_p2p_wheelhouse" not in out and "PLAY [Install the client" not in out


def test_the_allowance_is_a_setting() -> None:
    """With an allowance of 0 s even h1's 3 s are refused; with 200 s none of the offsets is,
    and every check passes (--tags preflight: only the checks run, nothing changes)."""
    skew = '"cloud_p2p_preflight_clock_test_skew": {"h1": 3, "h2": 120, "h3": -90}'
    rc, out, _ = playbook("playbooks/deploy.yml", "-e",
                          '{' + skew + ', "cloud_p2p_preflight_max_clock_offset_s": 0}')
    assert rc != 0
    assert near(named_offsets(clock_message(out)), {"h1": 3, "h2": 120, "h3": -90}), out[-3000:]
    rc, out, _ = playbook("playbooks/deploy.yml", "--tags", "preflight", "-e",
                          '{' + skew + ', "cloud_p2p_preflight_max_clock_offset_s": 200}')
    assert rc == 0 and "clocks:" not in out, out[-3000:]
    assert "Read each host's clock" in out and "cloud_p2p_install" not in out


def on_each(command: str) -> list[str]:
    out = []
    for h in NODES:
        r = hosts.ssh(h, command, timeout=30)
        assert r.returncode == 0, (h.name, command, r.stderr)
        out.append(r.stdout.strip())
    return out


def test_a_new_state_dir_is_refused_while_the_nodes_run_on_the_old_one() -> None:
    """It used to fail half-way at "Create the service user" (usermod: user cloud-p2p is
    currently used by process N). Now nothing changes, the nodes keep running, and the
    message says how to move the images; doing what it says works (the unit lets the node
    write there), and so does moving back."""
    from nodesvc.stress import make_png_parts, tagged_png

    parts = make_png_parts(2000)
    for i in range(6):
        assert put_image(1 + i % 3, f"state-dir-{i}.png", tagged_png(parts, str(i))) in (200, 201)
    counts = on_each("ls /var/lib/cloud-p2p/shared_images | wc -l")
    assert sum(map(int, counts)) >= 6
    rc, out, _ = playbook("playbooks/deploy.yml", "-e", "cloud_p2p_state_dir=/srv/other")
    assert rc != 0
    assert ("cloud_p2p_state_dir is /srv/other, but h1, h2, h3 keep their state and images in "
            "/var/lib/cloud-p2p") in out, out[-3000:]
    assert "systemctl stop cloud-p2p; mv -T /var/lib/cloud-p2p /srv/other" in out
    assert "usermod" not in out and "PLAY [Install the client" not in out
    rows = recap(out)
    assert all(r["changed"] == 0 for r in rows.values()), rows
    assert on_each("systemctl is-active cloud-p2p") == ["active"] * 3
    assert on_each("test -e /srv/other && echo there || echo absent") == ["absent"] * 3
    assert on_each("getent passwd cloud-p2p | cut -d: -f6") == ["/var/lib/cloud-p2p"] * 3

    # What the message says: stop, move, deploy (and back again, for the tests after this one).
    moves = [("/var/lib/cloud-p2p", "/srv/other", ["-e", "cloud_p2p_state_dir=/srv/other"]),
             ("/srv/other", "/var/lib/cloud-p2p", [])]
    for old, new, extra in moves:
        on_each(f"systemctl stop cloud-p2p && mv -T {old} {new}")
        rc, out, _ = playbook("playbooks/deploy.yml", *extra)
        assert rc == 0, out[-3000:]
        assert "cluster ready: leader is node 3 on every node" in out
        assert on_each(f"ls {new}/shared_images | wc -l") == counts
        assert on_each("getent passwd cloud-p2p | cut -d: -f6") == [new] * 3


def test_a_new_shared_dir_is_refused_while_the_old_one_holds_images() -> None:
    """Changing cloud_p2p_shared_dir alone used to start every node on an empty directory
    (404 for images it had acknowledged; the old ones left behind). Now nothing changes until
    the images are moved as the message says; deploying after the move serves them from the
    new directory, and the allowance lets a deploy start empty on purpose (its checks pass)."""
    from nodesvc.stress import make_png_parts, tagged_png

    old, new = "/var/lib/cloud-p2p/shared_images", "/var/lib/cloud-p2p/images-moved"
    parts, run = make_png_parts(2000), os.urandom(4).hex()
    names = [f"shared-dir-{run}-{i}.png" for i in range(6)]  # new on every run: 201
    for i, name in enumerate(names):
        assert put_image(1 + i % 3, name, tagged_png(parts, str(i))) == 201
    counts = on_each(f"find {old} -maxdepth 1 -type f -not -name '.*' | wc -l")
    rc, out, _ = playbook("playbooks/deploy.yml", "-e", f"cloud_p2p_shared_dir={new}")
    assert rc != 0
    assert (f"cloud_p2p_shared_dir is {new}, but h1, h2, h3 keep {', '.join(counts)} images "
            f"in {old}") in out, out[-3000:]
    assert f"systemctl stop cloud-p2p; mv -T {old} {new}" in out
    assert all(r["changed"] == 0 for r in recap(out).values())
    assert on_each(f"test -e {new} && echo there || echo absent") == ["absent"] * 3
    rc, out, _ = playbook("playbooks/deploy.yml", "--tags", "preflight",
                          "-e", f"cloud_p2p_shared_dir={new}",
                          "-e", "cloud_p2p_preflight_allow_new_shared_dir=true")
    assert rc == 0 and f"images in {old}" not in out, out[-3000:]
    assert "Note where this host keeps its images now" in out, out[-3000:]  # the check ran

    # What the message says: stop, move, deploy (and back again, for the tests after this one).
    for src, dst, extra in [(old, new, ["-e", f"cloud_p2p_shared_dir={new}"]), (new, old, [])]:
        on_each(f"systemctl stop cloud-p2p && mv -T {src} {dst}")
        rc, out, _ = playbook("playbooks/deploy.yml", *extra)
        assert rc == 0, out[-3000:]
        assert "cluster ready: leader is node 3 on every node" in out
        assert on_each(f"find {dst} -maxdepth 1 -type f -not -name '.*' | wc -l") == counts
        for i, name in enumerate(names):  # acknowledged before the move, served after it
            assert put_image(1 + i % 3, name, tagged_png(parts, str(i))) == 200
