"""How a new leader learns its index (nodesvc/relearn.py), and a follower's whole copy of it
(replica.decode_snapshot): pure functions, run on a worker thread by the node."""

from __future__ import annotations

import orjson

from nodesvc.relearn import relearn
from nodesvc.replica import WholeIndex, apply_changes, decode_snapshot

NODES = {1, 2, 3}


def test_each_name_goes_to_the_node_that_says_it_holds_it() -> None:
    learnt = relearn(3, ["c.png"], {1: ["a.png"], 2: ["b.png"]}, previous={}, seed={})
    assert learnt.index == {"a.png": 1, "b.png": 2, "c.png": 3}
    assert learnt.duplicates == {} and learnt.missing == {}


def test_a_name_two_nodes_hold_is_a_duplicate_and_keeps_its_first_holder() -> None:
    learnt = relearn(3, ["x.png"], {1: ["x.png"], 2: ["x.png"]}, previous={}, seed={})
    assert learnt.index == {"x.png": 3} and learnt.duplicates == {"x.png": {1, 2, 3}}


def test_a_node_not_asked_keeps_its_names_and_an_asked_node_that_lost_one_is_named() -> None:
    seed = {"gone.png": 1, "on-2.png": 2, "kept.png": 1}
    learnt = relearn(3, [], {1: ["kept.png"], 2: None},
                     previous={**seed, "placed-meanwhile.png": 1}, seed=seed)
    assert learnt.index == {"kept.png": 1, "on-2.png": 2, "placed-meanwhile.png": 1}
    assert learnt.missing == {1: ["gone.png"]}


def test_another_nodes_copy_says_where_a_node_not_asked_keeps_its_names() -> None:
    learnt = relearn(3, [], {1: [], 2: None}, previous={}, seed={},
                     copy={"only-in-copy.png": 2, "copy-says-1.png": 1})
    assert learnt.index == {"only-in-copy.png": 2}  # node 1 was asked: its own word counts


def test_changes_made_while_it_ran_are_caught_up() -> None:
    index = {"a.png": 1, "b.png": 2}
    apply_changes(index, [("c.png", 3), ("a.png", None), ("b.png", 1)])
    assert index == {"b.png": 1, "c.png": 3}


def test_a_whole_index_is_decoded_and_checked_entry_by_entry() -> None:
    body = orjson.dumps({"epoch": "e1", "next": 7, "index": {"a.png": 1, "b.png": 3}})
    assert decode_snapshot(body, NODES) == WholeIndex({"a.png": 1, "b.png": 3}, "e1", 7)
    for bad in (b"not json", b"[]", orjson.dumps({"epoch": "e1", "next": 7,
                                                  "index": {"a.png": 9}}),
                orjson.dumps({"epoch": "e1", "next": 7, "index": {"../x": 1}})):
        assert decode_snapshot(bad, NODES) is None
