"""The bully election, driven step by step with a fake clock and an in-memory network."""

from __future__ import annotations

import itertools
from collections import deque

import pytest

from nodesvc.election import Election, Kind, Log, Message, Role, Send, Timings

T = Timings(heartbeat=0.15, leader_timeout=0.6, election_timeout=0.3)


class Net:
    """Instant delivery between live nodes. A dead node either refuses (its host answers:
    connection refused) or is silent (power cut, partition): silence is only noticed by the
    state machine's own timeouts, except for ELECTION, which the node shell turns into a
    delivery failure when its request times out."""

    def __init__(self, ids: list[int], hashes: dict[int, str] | None = None) -> None:
        self.nodes = {i: Election(i, ids, T, config_hash=(hashes or {}).get(i, "same"))
                      for i in ids}
        self.up: set[int] = set()
        self.refusing: set[int] = set()
        self.cut: set[frozenset[int]] = set()
        self.now = 0.0
        self.queue: deque[tuple[int, Send]] = deque()
        self.logs: list[str] = []
        self.leader_history: list[tuple[float, int, int]] = []  # (time, node, its term)
        self.ticks: dict[int, int] = {}  # node -> how often it ticked

    def _dispatch(self, sender: int, actions: list) -> None:  # type: ignore[type-arg]
        for a in actions:
            if isinstance(a, Send):
                self.queue.append((sender, a))
            elif isinstance(a, Log):
                self.logs.append(a.text)
        node = self.nodes[sender]
        if node.role is Role.LEADER and (not self.leader_history
                                         or self.leader_history[-1][1:] != (sender, node.term)):
            self.leader_history.append((self.now, sender, node.term))

    def start(self, i: int) -> None:
        self.nodes[i] = Election(i, list(self.nodes), T, config_hash=self.nodes[i].config_hash)
        self.up.add(i)
        self.refusing.discard(i)
        self._dispatch(i, self.nodes[i].start(self.now))
        self._deliver()

    def kill(self, i: int, refuse: bool = False) -> None:
        self.up.discard(i)
        if refuse:
            self.refusing.add(i)

    def _deliver(self) -> None:
        while self.queue:
            sender, send = self.queue.popleft()
            if sender not in self.up:
                continue
            to, msg = send.to, send.message
            silent = to not in self.up or frozenset((sender, to)) in self.cut
            if silent:
                if to in self.refusing or msg.kind is Kind.ELECTION:
                    self._dispatch(sender, self.nodes[sender].delivery_failed(to, msg.kind,
                                                                              self.now))
                continue
            reply, actions = self.nodes[to].receive(msg, self.now)
            self._dispatch(to, actions)
            if reply is not None:
                _, back = self.nodes[sender].receive(reply, self.now)
                self._dispatch(sender, back)

    def run(self, seconds: float, step: float = 0.005) -> None:
        """Time passes in small steps, and each node ticks only when its election says it
        has something to do (`next_deadline`), as the node does."""
        end = self.now + seconds
        while self.now < end:
            self.now = round(self.now + step, 6)
            for i in sorted(self.up):
                if self.now >= self.nodes[i].next_deadline():
                    self.ticks[i] = self.ticks.get(i, 0) + 1
                    self._dispatch(i, self.nodes[i].tick(self.now))
            self._deliver()

    def agreed_leader(self, among: set[int] | None = None) -> int | None:
        views = {self.nodes[i].leader for i in (among or self.up)}
        return views.pop() if len(views) == 1 else None

    def time_to_agree(self, expected: int, limit: float, among: set[int] | None = None) -> float:
        t0 = self.now
        while self.now - t0 < limit:
            if self.agreed_leader(among) == expected:
                return self.now - t0
            self.run(0.0375)
        raise AssertionError(f"no agreement on {expected} within {limit}s: "
                             f"{ {i: self.nodes[i].leader for i in self.up} }")


def test_a_lone_highest_node_leads_at_once() -> None:
    net = Net([1, 2, 3])
    net.start(3)
    assert net.nodes[3].role is Role.LEADER and net.nodes[3].term == 1
    assert "[Node 3] no higher nodes -> becoming coordinator (term 1)" in net.logs


@pytest.mark.parametrize("order", list(itertools.permutations([1, 2, 3])))
def test_any_start_order_converges_on_the_highest_id_within_a_second(order) -> None:  # type: ignore[no-untyped-def]
    net = Net([1, 2, 3])
    for i in order:
        net.start(i)
        net.run(0.2)
    assert net.time_to_agree(3, limit=1.0) <= 1.0
    roles = {i: net.nodes[i].role for i in (1, 2, 3)}
    assert roles == {1: Role.FOLLOWER, 2: Role.FOLLOWER, 3: Role.LEADER}


def test_lower_nodes_wait_for_a_higher_one_that_answers() -> None:
    net = Net([1, 2, 3])
    net.start(3)
    net.start(1)
    assert net.nodes[1].leader == 3 and net.nodes[1].role is Role.FOLLOWER
    assert "[Node 1] Coordinator announced: 3" in net.logs


def test_a_silent_dead_leader_is_replaced_within_two_seconds() -> None:
    net = Net([1, 2, 3])
    for i in (1, 2, 3):
        net.start(i)
    net.run(0.5)
    net.kill(3)  # power cut: no answer at all
    took = net.time_to_agree(2, limit=2.0)
    assert took >= T.leader_timeout - 0.1  # it really waited for silence, not less
    assert net.nodes[2].role is Role.LEADER


def test_a_refused_connection_to_the_leader_starts_an_election_at_once() -> None:
    net = Net([1, 2, 3])
    for i in (1, 2, 3):
        net.start(i)
    net.run(0.5)
    net.kill(3, refuse=True)  # the process died; its host refuses connections
    took = net.time_to_agree(2, limit=2.0)
    assert took <= T.heartbeat + 0.1


def test_a_returning_higher_node_takes_over_with_a_later_term() -> None:
    net = Net([1, 2, 3])
    for i in (1, 2, 3):
        net.start(i)
    net.run(0.5)
    net.kill(3, refuse=True)
    net.time_to_agree(2, limit=2.0)
    net.run(0.5)
    net.start(3)
    net.time_to_agree(3, limit=1.0)
    net.run(0.5)
    terms = {i: net.nodes[i].term for i in (1, 2, 3)}
    assert len(set(terms.values())) == 1, terms
    leaders = [(node, term) for _, node, term in net.leader_history]
    # Terms name leaderships: every new leader's final term is above the previous one's.
    final_terms: dict[int, int] = {}
    order: list[int] = []
    for node, term in leaders:
        if not order or order[-1] != node:
            order.append(node)
        final_terms[node] = term
    assert order[-2:] == [2, 3]
    assert final_terms[3] > final_terms[2]


def test_a_coordinator_from_a_lower_node_is_bullied() -> None:
    net = Net([1, 2, 3])
    for i in (1, 2, 3):
        net.start(i)
    net.run(0.5)
    fake = Message(Kind.COORDINATOR, 1, 99, 1)
    _, actions = net.nodes[3].receive(fake, net.now)
    assert net.nodes[3].role is Role.LEADER
    assert any(isinstance(a, Send) and a.to == 1 and a.message.kind is Kind.COORDINATOR
               for a in actions)
    net._dispatch(3, actions)
    net._deliver()
    net.run(0.5)
    assert net.agreed_leader() == 3


def test_a_partition_heals_into_exactly_one_leader() -> None:
    net = Net([1, 2, 3])
    for i in (1, 2, 3):
        net.start(i)
    net.run(0.5)
    net.cut = {frozenset((3, 1)), frozenset((3, 2))}
    net.run(2.0)
    assert net.nodes[3].role is Role.LEADER
    assert net.agreed_leader({1, 2}) == 2  # the minority side elected its own
    net.cut = set()
    net.run(1.0)
    assert net.agreed_leader() == 3
    assert [net.nodes[i].role for i in (1, 2, 3)].count(Role.LEADER) == 1


def test_a_config_mismatch_is_logged_once_per_peer_and_listed() -> None:
    net = Net([1, 2, 3], hashes={1: "aaa", 2: "aaa", 3: "bbb"})
    for i in (1, 2, 3):
        net.start(i)
    net.run(1.0)
    warnings = [line for line in net.logs if "CONFIG MISMATCH" in line]
    assert len([w for w in warnings if w.startswith("[Node 1]")]) == 1
    assert len([w for w in warnings if w.startswith("[Node 3]")]) == 2  # about 1 and 2
    assert net.nodes[1].config_mismatches() == [3]
    assert net.nodes[3].config_mismatches() == [1, 2]


def test_messages_from_unknown_nodes_are_ignored() -> None:
    e = Election(1, [1, 2], T)
    e.start(0.0)
    reply, actions = e.receive(Message(Kind.COORDINATOR, 7, 5, 7), 0.1)
    assert reply is None and e.leader != 7
    assert any(isinstance(a, Log) and "from node 7, which is not in" in a.text
               for a in actions)
    # Said once a minute, not at each of its heartbeats.
    assert e.receive(Message(Kind.HEARTBEAT, 7, 5, 7), 0.3) == (None, [])
    assert e.receive(Message(Kind.HEARTBEAT, 7, 5, 7), 59.0) == (None, [])
    _, later = e.receive(Message(Kind.HEARTBEAT, 7, 5, 7), 60.2)
    assert any(isinstance(a, Log) and "node 7" in a.text for a in later)


def test_message_round_trip_and_rejects() -> None:
    msg = Message(Kind.HEARTBEAT, 2, 4, 3, stored=10, inflight=1, config_hash="abc")
    assert Message.from_dict(msg.to_dict()) == msg
    good = msg.to_dict()
    for bad in ({**good, "kind": "hello"}, {**good, "sender": -1}, {**good, "term": True},
                {k: v for k, v in good.items() if k != "leader"}, [1, 2], "x"):
        with pytest.raises(ValueError):
            Message.from_dict(bad)


def heartbeats_per_period(net: Net, seconds: float) -> float:
    """Heartbeats sent per heartbeat period, counted while `net` runs for `seconds`."""
    sent = 0
    dispatch = net._dispatch

    def counting(sender: int, actions: list) -> None:  # type: ignore[type-arg]
        nonlocal sent
        sent += sum(isinstance(a, Send) and a.message.kind is Kind.HEARTBEAT for a in actions)
        dispatch(sender, actions)

    net._dispatch = counting  # type: ignore[method-assign]
    net.run(seconds)
    net._dispatch = dispatch  # type: ignore[method-assign]
    return sent / (seconds / T.heartbeat)


@pytest.mark.parametrize("n", [3, 5])
def test_each_pair_exchanges_one_heartbeat_a_period_and_every_view_stays_fresh(n: int) -> None:
    """An ACK tells the sender what a heartbeat would, so each pair needs one exchange per
    period, not two; followers keep sending theirs to the leader."""
    ids = list(range(1, n + 1))
    net = Net(ids)
    for i in ids:
        net.start(i)
        net.run(0.05)  # nodes come up at different moments, as real ones do
    net.run(1.0)
    for i in ids:
        net.nodes[i].stored = 100 * i
    rate = heartbeats_per_period(net, 3.0)
    pairs = n * (n - 1) // 2
    assert pairs <= rate <= pairs + (n - 1) + 0.5  # was n * (n - 1): both ways, every pair
    for i in ids:
        for p, view in net.nodes[i].peers.items():
            assert view.alive and net.now - view.last_heard <= T.heartbeat + 0.04
            assert view.stored == 100 * p
        assert net.nodes[i].leader == n


def test_a_follower_that_dies_is_noticed_by_the_leader_within_a_period() -> None:
    net = Net([1, 2, 3])
    for i in (1, 2, 3):
        net.start(i)
        net.run(0.05)
    net.run(1.0)
    net.kill(1, refuse=True)
    net.run(T.heartbeat + 0.05)
    assert not net.nodes[3].peers[1].alive
    assert net.nodes[3].peers[2].alive


def test_an_idle_node_ticks_about_once_a_period_yet_notices_a_silent_leader_in_time() -> None:
    """The node ticks at the election's next deadline, not on a fixed beat (it ticked four
    times a period): once a heartbeat period when all is well, and still on time for a
    leader that falls silent."""
    net = Net([1, 2, 3])
    for i in (1, 2, 3):
        net.start(i)
        net.run(0.05)
    net.run(1.0)
    net.ticks.clear()
    net.run(3.0)
    for i in (1, 2, 3):
        assert net.ticks[i] / 3.0 <= 1 / T.heartbeat + 1, net.ticks
    net.kill(3)  # silent: only the followers' own deadlines can notice
    t0 = net.now
    net.run(T.leader_timeout + 0.02)
    assert not net.nodes[2].peers[3].alive and net.nodes[2].role is not Role.FOLLOWER
    net.time_to_agree(2, 2.0, among={1, 2})
    assert net.now - t0 < T.leader_timeout + T.election_timeout + 0.1


def test_a_peer_we_cannot_reach_takes_no_work_and_is_probed_until_reached() -> None:
    e = Election(3, [1, 2, 3], T)
    e.start(0.0)
    assert e.role is Role.LEADER
    for peer in (1, 2):  # both heartbeat us, so we need not send ours to them
        e.receive(Message(Kind.HEARTBEAT, peer, e.term, 3), 0.05)
    assert e.alive_ids() == [1, 2, 3]
    sends = [a.to for a in e.tick(0.16) if isinstance(a, Send)]
    assert sends == []
    assert e.reach(2, False) and not e.reach(2, False)  # a change once
    assert e.alive_ids() == [1, 3]  # alive (its messages arrive), but not reachable
    for peer in (1, 2):
        e.receive(Message(Kind.HEARTBEAT, peer, e.term, 3), 0.2)
    sends = [a.to for a in e.tick(0.31) if isinstance(a, Send)]
    assert sends == [2]  # our own heartbeat probes it
    assert e.reach(2, True) and e.alive_ids() == [1, 2, 3]


def _follower_of_3(now: float) -> Election:
    e = Election(1, [1, 2, 3], T)
    e.start(now)
    for peer in (2, 3):
        e.receive(Message(Kind.ALIVE, peer, 1, None), now)
    e.receive(Message(Kind.COORDINATOR, 3, 1, 3), now)
    assert e.role is Role.FOLLOWER and e.leader == 3
    return e


def test_a_follower_that_was_not_running_does_not_blame_its_leader() -> None:
    """Its event loop blocked for 2 s (a large index to read, say): the leader's heartbeats
    of that time are waiting in its sockets, not missing."""
    e = _follower_of_3(0.0)
    e.tick(0.1)
    actions = e.tick(2.1)  # the first event after the stall: time has jumped
    assert e.role is Role.FOLLOWER and e.leader == 3 and e.peers[3].alive
    assert not any(isinstance(a, Log) and "starting election" in a.text for a in actions)
    assert any(isinstance(a, Log) and "was not running for 2.00 s" in a.text for a in actions)
    e.receive(Message(Kind.HEARTBEAT, 3, 1, 3), 2.1)  # ... read right after it
    assert e.role is Role.FOLLOWER and e.leader == 3


def test_a_leader_that_died_during_the_stall_is_still_noticed_after_it() -> None:
    e = _follower_of_3(0.0)
    e.tick(0.1)
    e.tick(2.1)
    now, elected_at = 2.1, None
    while now < 4.0 and elected_at is None:
        now = round(now + 0.01, 6)
        if now >= e.next_deadline() and any(
                isinstance(a, Log) and "leader 3 is silent" in a.text for a in e.tick(now)):
            elected_at = now
    assert elected_at is not None and elected_at - 2.1 <= T.leader_timeout + 0.02
