"""Least-load placement (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nodesvc.placement import Placement


def test_fewest_assigned_wins_and_ties_go_to_the_lowest_id() -> None:
    p = Placement({1: 5, 2: 3, 3: 3})
    assert p.choose([1, 2, 3]) == 2
    assert p.choose([3, 1]) == 3
    assert p.choose([1, 2, 3], exclude=[2]) == 3
    assert p.choose([2], exclude=[2]) is None
    assert p.choose([]) is None


def test_hundred_uploads_over_three_fresh_nodes_end_34_33_33() -> None:
    p = Placement()
    for _ in range(100):
        node = p.choose([1, 2, 3])
        assert node is not None
        p.reserve(node)
    assert p.assigned == {1: 34, 2: 33, 3: 33}


def test_a_new_leader_seeded_from_reports_feeds_the_lagging_node() -> None:
    p = Placement()
    p.seed({1: 40, 2: 40, 3: 10})
    picks = []
    for _ in range(30):
        node = p.choose([1, 2, 3])
        assert node is not None
        p.reserve(node)
        picks.append(node)
    assert picks == [3] * 30


def test_a_reseeded_leader_counts_what_it_placed_while_relearning() -> None:
    """A leader re-learns the index (another node claimed its term) while it goes on placing:
    the reports it seeds from were read before the placements it made meanwhile. (Seeding
    from the reports alone sent the second and third of three uploads to nodes 1 and 2.)"""
    p = Placement()
    p.seed({1: 0, 2: 0, 3: 0})
    p.reserve(1)
    p.confirm(1)  # one.png stored on node 1, in the index
    p.reserve(2)  # two.png under way to node 2, not in the index yet
    p.seed({1: 0, 2: 0, 3: 0}, held={1: 1})
    assert (p.count(1), p.count(2), p.count(3)) == (1, 1, 0)
    assert p.choose([1, 2, 3]) == 3
    p.confirm(2)
    assert p.recorded(2) == 1
    p.seed({1: 5, 2: 0, 3: 0}, held={1: 1, 2: 1})  # a report above the index wins
    assert (p.count(1), p.count(2), p.count(3)) == (5, 1, 0)


def test_observe_never_lowers_and_release_undoes_reserve() -> None:
    p = Placement({1: 10})
    p.observe(1, 4)
    assert p.count(1) == 10
    p.observe(1, 12)
    assert p.count(1) == 12
    p.reserve(2)
    p.release(2)
    assert p.count(2) == 0
    p.release(2)
    assert p.count(2) == 0  # never negative


@given(start=st.integers(0, 1000), nodes=st.integers(1, 7), picks=st.integers(0, 500))
def test_spread_stays_within_one(start: int, nodes: int, picks: int) -> None:
    ids = list(range(1, nodes + 1))
    p = Placement()
    p.seed(dict.fromkeys(ids, start))
    for _ in range(picks):
        node = p.choose(ids)
        assert node is not None
        p.reserve(node)
    counts = [p.count(i) for i in ids]
    assert max(counts) - min(counts) <= 1
    assert sum(counts) == start * nodes + picks


def test_recorded_counts_settled_uploads_only() -> None:
    """Placement weighs uploads under way too; the RECORDED log line counts only those
    settled, so with concurrent uploads it still goes up by one per stored image."""
    p = Placement()
    for _ in range(3):
        p.reserve(1)
    assert (p.count(1), p.recorded(1)) == (3, 0)
    p.confirm(1)
    assert (p.count(1), p.recorded(1)) == (3, 1)
    p.release(1)  # one failed: no longer weighed, never recorded
    assert (p.count(1), p.recorded(1)) == (2, 1)
    p.confirm(1)
    assert (p.count(1), p.recorded(1)) == (2, 2)


def test_a_node_that_lost_its_images_is_weighed_by_what_it_still_holds() -> None:
    p = Placement()
    p.seed({1: 40, 2: 40, 3: 40})
    p.reserve(1)  # one upload under way there
    p.lost(1, 40)
    assert p.count(1) == 1  # the upload under way still counts
    assert p.choose([1, 2, 3]) == 1
    p.lost(2, 1000)
    assert p.count(2) == 0  # never below zero
