"""testinfra checks of what landed on every node.

    pytest tests/infra --hosts=ansible://nodes --ansible-inventory=lab/inventory.ini
    pytest tests/infra --hosts=ssh://root@10.0.0.1,ssh://root@10.0.0.2 ...

The expected ports and image directory come from the hosts' own /etc/cloud-p2p/config.json
(the deployed truth), the service user from its unit, the SSH port from the inventory
(cloud_p2p_firewall_ssh_port or ansible_port, else 22; $CLOUD_P2P_SSH_PORT overrides), and the
expected files from the last stress report (reports/last-stress.json or $CLOUD_P2P_REPORT).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPORT = Path(os.environ.get("CLOUD_P2P_REPORT",
                             Path(__file__).resolve().parents[2] / "reports" / "last-stress.json"))
CONFIG = "/etc/cloud-p2p/config.json"


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
def shared_dir(cluster_config) -> str:  # type: ignore[no-untyped-def]
    return str(cluster_config["shared_dir"])


@pytest.fixture
def service_user(host) -> str:  # type: ignore[no-untyped-def]
    """The user the unit runs the service as (cloud_p2p_user of the deployment)."""
    return str(host.check_output("systemctl show cloud-p2p -p User --value").strip())


@pytest.fixture
def ssh_port(host) -> int:  # type: ignore[no-untyped-def]
    """The SSH port the firewall must keep open, found as the firewall role finds it."""
    if "CLOUD_P2P_SSH_PORT" in os.environ:
        return int(os.environ["CLOUD_P2P_SSH_PORT"])
    try:
        variables = host.ansible.get_variables()
    except RuntimeError:  # not the ansible:// backend: no inventory to read
        variables = {}
    return int(variables.get("cloud_p2p_firewall_ssh_port", variables.get("ansible_port", 22)))


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
