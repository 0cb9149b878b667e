"""A changed deployment, re-deployed under load, restarts the nodes one at a time: no client
sees a failed upload and nothing is lost. Leaves the changed setting in place (a deploy back
would cost 40 s of CI): the infra tests read each host's own config.json, and every later
deploy writes the standard settings again."""

from __future__ import annotations

import itertools
import json

import pytest

from cloudlab import hosts, inventory
from cloudlab.cli import node_hosts
from tests.lab.test_deploy import playbook

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not inventory.INVENTORY.exists(),
                       reason="the lab is down (python -m cloudlab up)"),
]


def start_times() -> list[float]:
    """When each node's process started, in seconds of the machine's monotonic clock (the
    containers share it, so the hosts' times compare)."""
    out = []
    for h in node_hosts():
        text = hosts.ssh(h, "systemctl show cloud-p2p -p ExecMainStartTimestampMonotonic "
                            "--value").stdout
        out.append(int(text.strip()) / 1e6)
    return out


def test_a_changed_deployment_rolls_one_node_at_a_time_under_load() -> None:
    from cloudlab.faults import audit_until_clean, peers, wait_settled
    from nodesvc.loadgen import BackgroundLoad

    wait_settled()
    config = json.loads(hosts.ssh(node_hosts()[0], "cat /etc/cloud-p2p/config.json").stdout)
    limit = 33554433 if config.get("max_image_bytes") != 33554433 else 33554434  # a change
    with BackgroundLoad(peers(), "roll", concurrency=4) as load:
        load.wait_for(50)
        rc, out, took = playbook("playbooks/deploy.yml", "-e",
                                 json.dumps({"cloud_p2p_settings": {"max_image_bytes": limit}}))
        load.wait_for(len(load.records) + 50)
    assert rc == 0, out[-3000:]
    handler = out.split("RUNNING HANDLER [cloud_p2p_service : Restart cloud-p2p]", 1)[1]
    handler = handler.split("TASK [", 1)[0].split("RUNNING HANDLER", 1)[0]
    assert sorted(line.split("[", 1)[1].split("]")[0] for line in handler.splitlines()
                  if line.startswith("changed:")) == ["h1", "h2", "h3"]
    starts = sorted(start_times())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) > 0.2, gaps  # one after another, each once the previous one was back
    assert load.failures() == [], [r.result for r in load.failures()[:3]]
    assert audit_until_clean(load.records, "roll") == []
    print(f"rolling re-deploy under load: {took:.1f}s, {len(load.records)} uploads, 0 failed")
