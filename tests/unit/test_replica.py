"""A follower's copy of the leader's index follows the leader's numbered changes."""

from __future__ import annotations

from nodesvc.replica import ChangeLog, Replica

NODES = {1, 2, 3}


def follow(log: ChangeLog, replica: Replica, index: dict[str, int]) -> bool:
    """One heartbeat and its ACK; True if the follower must fetch a snapshot."""
    pos = replica.position()
    return replica.apply(index, log.since(pos["epoch"], pos["next"]), NODES)


def snapshot(log: ChangeLog, leader_index: dict[str, int]) -> dict[str, object]:
    return {"epoch": log.epoch, "next": log.next, "index": dict(leader_index)}


def test_a_follower_starts_from_a_snapshot_then_follows_the_changes() -> None:
    log, replica, index = ChangeLog(), Replica(), {}
    leader = {"a.png": 1}
    assert follow(log, replica, index)  # another epoch: a snapshot first
    assert replica.load(index, snapshot(log, leader), NODES) and index == {"a.png": 1}
    log.record("b.png", 2)
    log.record("a.png", 3)   # (a duplicate resolved: kept on node 3)
    log.record("b.png", None)  # (lost with a wiped disk)
    assert not follow(log, replica, index)
    assert index == {"a.png": 3} and replica.next == 3
    assert not follow(log, replica, index) and index == {"a.png": 3}  # nothing new


def test_a_new_epoch_or_a_follower_too_far_behind_resets() -> None:
    log, replica, index = ChangeLog(keep=4, batch=10), Replica(), {}
    replica.load(index, snapshot(log, {}), NODES)
    for i in range(6):  # more than kept: the oldest are dropped
        log.record(f"n{i}.png", 1)
    assert log.base > 0
    assert follow(log, replica, index) and index == {}  # what it needs is gone
    replica.load(index, snapshot(log, {f"n{i}.png": 1 for i in range(6)}), NODES)
    log.restart()  # the leader learnt its index anew
    assert follow(log, replica, index)


def test_changes_come_in_bounded_batches() -> None:
    log, replica, index = ChangeLog(batch=2), Replica(), {}
    replica.load(index, snapshot(log, {}), NODES)
    for i in range(5):
        log.record(f"n{i}.png", 2)
    sizes = []
    while replica.next < log.next:
        before = replica.next
        assert not follow(log, replica, index)
        sizes.append(replica.next - before)
    assert sizes == [2, 2, 1] and len(index) == 5


def test_a_malformed_update_or_snapshot_changes_nothing() -> None:
    log, replica, index = ChangeLog(), Replica(), {"keep.png": 1}
    replica.load(index, snapshot(log, {"keep.png": 1}), NODES)
    e = log.epoch
    for bad in ({"epoch": e, "from": 0, "changes": [["../x", 1]], "next": 1},
                {"epoch": e, "from": 0, "changes": [["x.png", 9]], "next": 1},
                {"epoch": e, "from": 0, "changes": [["x.png", True]], "next": 1},
                {"epoch": e, "from": 0, "changes": [["x.png", 1]], "next": 5},
                {"epoch": e, "from": 0, "changes": "x", "next": 1}, [], None):
        assert not replica.apply(index, bad, NODES)
        assert index == {"keep.png": 1} and replica.next == 0
    for bad_snapshot in ({"epoch": e, "next": 0, "index": {"x.png": 7}},
                         {"epoch": e, "next": 0, "index": {"../x": 1}},
                         {"epoch": e, "next": "0", "index": {}}, None):
        assert not replica.load(index, bad_snapshot, NODES)
        assert index == {"keep.png": 1}


def test_the_leader_answers_a_position_it_never_gave_with_a_reset() -> None:
    log = ChangeLog()
    log.record("a.png", 1)
    for position in (-1, 2, True, "0", None):
        assert log.since(log.epoch, position) == {"epoch": log.epoch, "reset": True}
    assert log.since(log.epoch, 1)["changes"] == []
