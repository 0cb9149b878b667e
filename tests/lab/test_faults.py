"""Each fault once, under load, on the deployed lab cluster: no client error, a clean audit
(every acknowledged upload on exactly one host with its sha256, no temporary files), and the
highest id leading again afterwards. bench/faults.py repeats them and prints the table."""

from __future__ import annotations

import pytest

from cloudlab import inventory

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not inventory.INVENTORY.exists(),
                       reason="the lab is down (python -m cloudlab up)"),
]


@pytest.mark.parametrize("case", [
    "power cut of the leader's host",
    "kill -9 of the leader's service",
    "network partition of the leader",
    "leader paused (SIGSTOP/SIGCONT)",
    "follower killed mid-upload",
])
def test_fault_costs_clients_nothing_and_loses_nothing(case: str) -> None:
    from cloudlab.faults import CASES, run_case, wait_settled

    assert case in CASES
    result = run_case(case, repetitions=1, run_tag="t")
    assert result.uploads > 80
    assert result.failed == 0, result.row()
    assert result.problems == [], result.problems[:5]
    assert len(result.recoveries) == 1 and result.recoveries[0] < 10
    wait_settled(timeout=30)
