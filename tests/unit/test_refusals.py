from nodesvc.refusals import Refusals


def test_a_node_refused_by_every_peer_that_answers_is_shunned() -> None:
    r = Refusals(fresh=5.0)
    assert r.shunned_by(0.0) == {}  # nobody answered yet: alone, not shunned
    r.refused(2, 1.0, "bad peer signature")
    r.refused(3, 1.5, "the sender's clock reads 90 s ahead")
    assert r.shunned_by(2.0) == {2: "bad peer signature", 3: "the sender's clock reads 90 s ahead"}


def test_one_peer_that_accepts_is_enough_and_old_answers_expire() -> None:
    r = Refusals(fresh=5.0)
    r.refused(3, 1.0, "bad peer signature")  # the odd one out refuses us...
    r.accepted(1, 1.2)                       # ... while the rest of the cluster believes us
    assert r.shunned_by(2.0) == {}
    r.refused(3, 3.0, "bad peer signature")
    assert r.shunned_by(6.5) == {3: "bad peer signature"}  # node 1's answer is too old now
    r.accepted(3, 7.0)  # its clock or secret was mended
    assert r.shunned_by(7.1) == {}
    assert r.shunned_by(20.0) == {}  # and nothing recent at all: not shunned
