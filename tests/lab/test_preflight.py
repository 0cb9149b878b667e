"""deploy.yml's checks on the hosts before any change: clocks in sync, the state directory not
moved under a running node. Needs a running lab (`python -m cloudlab up`) on which deploy.yml
has run (tests/lab/test_deploy.py, earlier in the run)."""

from __future__ import annotations

import re

import pytest

from tests.lab.test_deploy import INVENTORY, playbook, recap

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not INVENTORY.exists(), reason="the lab is down (python -m cloudlab up)"),
]


def clock_message(out: str) -> str:
    found = re.search(r"Action failed: (clocks: .*)", out)
    assert found, out[-3000:]
    return found.group(1)


def test_a_host_whose_clock_is_off_is_refused_before_any_change() -> None:
    """The lab's hosts share the machine's clock, so the offsets are injected into the hosts'
    readings: h2 two minutes ahead and h3 90 s behind are named with their offsets; h1, 3 s
    ahead, is within the default 5 s and is not named."""
    skew = '{"cloud_p2p_preflight_clock_test_skew": {"h1": 3, "h2": 120, "h3": -90}}'
    rc, out, _ = playbook("playbooks/deploy.yml", "-e", skew)
    assert rc != 0
    msg = clock_message(out)
    assert msg.startswith("clocks: h2 +120 s, h3 -90 s (host minus control machine"), msg
    assert "h1" not in msg.split("(")[0]
    assert "chrony" in msg and "systemd-timesyncd" in msg
    rows = recap(out)
    assert {h for h in rows if h.startswith("h")} == {"h1", "h2", "h3"}
    assert all(r["changed"] == 0 for r in rows.values()), rows
    assert "cloud_p2p_wheelhouse" not in out and "PLAY [Install the client" not in out


def test_the_allowance_is_a_setting() -> None:
    """With an allowance of 0 s even h1's 3 s are refused; with 200 s none of the offsets is,
    and the deploy goes on past the check (under --check, so that nothing changes)."""
    skew = '"cloud_p2p_preflight_clock_test_skew": {"h1": 3, "h2": 120, "h3": -90}'
    rc, out, _ = playbook("playbooks/deploy.yml", "-e",
                          '{' + skew + ', "cloud_p2p_preflight_max_clock_offset_s": 0}')
    assert rc != 0
    assert clock_message(out).startswith("clocks: h1 +3 s, h2 +120 s, h3 -90 s ("), out[-3000:]
    rc, out, _ = playbook("playbooks/deploy.yml", "--check", "-e",
                          '{' + skew + ', "cloud_p2p_preflight_max_clock_offset_s": 200}')
    assert rc == 0 and "clocks:" not in out, out[-3000:]
