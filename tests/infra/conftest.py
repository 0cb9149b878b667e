"""testinfra checks of what landed on every node.

    pytest tests/infra --hosts=ansible://nodes --ansible-inventory=lab/inventory.ini
    pytest tests/infra --hosts=ssh://root@10.0.0.1,ssh://root@10.0.0.2 ...

The expected ports come from the hosts' own /etc/cloud-p2p/config.json (the deployed truth);
the expected files from the last stress report (reports/last-stress.json or $CLOUD_P2P_REPORT).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPORT = Path(os.environ.get("CLOUD_P2P_REPORT",
                             Path(__file__).resolve().parents[2] / "reports" / "last-stress.json"))
CONFIG = "/etc/cloud-p2p/config.json"
SHARED = "/var/lib/cloud-p2p/shared_images"


@pytest.fixture(scope="module")
def all_hosts(request: pytest.FixtureRequest) -> list:  # type: ignore[type-arg]
    """Every host of this run, for checks that compare hosts with each other.

    The same arguments as testinfra's own plugin, so its cached connections are reused.
    """
    import testinfra

    opt = request.config.option
    if not opt.hosts:
        pytest.skip("comparing hosts needs --hosts=... (e.g. ansible://nodes)")
    return testinfra.get_hosts(opt.hosts.split(","), connection=opt.connection,
                               ssh_config=opt.ssh_config,
                               ssh_identity_file=opt.ssh_identity_file,
                               sudo=opt.sudo, sudo_user=opt.sudo_user,
                               ansible_inventory=opt.ansible_inventory,
                               force_ansible=opt.force_ansible)


@pytest.fixture
def cluster_config(host) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(host.file(CONFIG).content_string)


@pytest.fixture
def node_id(host, cluster_config) -> int:  # type: ignore[no-untyped-def]
    """This host's id, from the unit's environment (what systemd really runs with)."""
    env = host.check_output("systemctl show cloud-p2p -p Environment --value")
    for item in env.split():
        if item.startswith("NODE_ID="):
            return int(item.split("=", 1)[1])
    raise AssertionError(f"no NODE_ID in the unit's environment: {env}")


@pytest.fixture(scope="session")
def report() -> dict:
    if not REPORT.is_file():
        pytest.skip(f"no stress report at {REPORT}: run playbooks/stress.yml first")
    return json.loads(REPORT.read_text())
