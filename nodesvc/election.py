"""The bully election as a pure state machine (sans-I/O, in the manner of h11).

The node feeds it events — `start`, `receive` (a peer's message), `delivery_failed` (a peer
could not be reached) and `tick` (time passed) — each with the current time, and gets back
actions: messages to send and lines to log. It never touches a socket or a clock, so tests
drive an election step by step with a fake clock.

The rules, in short:
- a node that starts, or loses its leader, sends ELECTION to every higher id;
- a higher node that is alive answers ALIVE and runs its own election;
- a node that hears no ALIVE (all higher ids failed or stayed silent) becomes the leader and
  announces COORDINATOR to everyone, with a term one above any it has seen;
- a COORDINATOR from a lower id is answered by bullying it: we start our own election;
- every pair of nodes exchanges a HEARTBEAT (and its ACK) every `heartbeat_ms`; a follower
  that hears nothing from its leader for `leader_timeout_ms` (or fails to reach it) starts an
  election.
A node that was itself not running for a while (its event loop blocked on a large piece of
work, the process paused, the machine swapping) does not count that time against its peers:
the messages they sent meanwhile are still waiting in its sockets, and blaming them made a
busy follower start election after election (see `_catch_up`).
Heartbeats and their ACKs carry each node's stored count, so a new leader knows the real load
at once. The ACK tells the sender all a heartbeat would, so a node does not send its own
heartbeat to a peer whose heartbeat it answered less than `heartbeat_ms` ago: one exchange per
pair per period instead of two, half the idle traffic (an idle node spent 8% of a core on it).
A follower still sends its own to its leader every period, so that a dead leader is noticed
by a refused connection at once; the leader's claim then reaches it in the ACK.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum


class Role(StrEnum):
    LEADER = "leader"
    FOLLOWER = "follower"
    CANDIDATE = "candidate"


class Kind(StrEnum):
    ELECTION = "election"
    ALIVE = "alive"
    COORDINATOR = "coordinator"
    HEARTBEAT = "heartbeat"
    ACK = "ack"


UNKNOWN_NODE_LOG_EVERY = 60.0  # seconds between two log lines about one unknown sender


@dataclass(frozen=True)
class Message:
    kind: Kind
    sender: int
    term: int
    leader: int | None
    stored: int = 0
    inflight: int = 0
    config_hash: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind.value,
            "sender": self.sender,
            "term": self.term,
            "leader": self.leader,
            "stored": self.stored,
            "inflight": self.inflight,
            "config_hash": self.config_hash,
        }

    @classmethod
    def from_dict(cls, data: object) -> Message:
        """Build from decoded JSON; raise ValueError on anything malformed."""
        if not isinstance(data, dict):
            raise ValueError("message must be an object")
        try:
            leader = data["leader"]
            msg = cls(
                kind=Kind(data["kind"]),
                sender=_int(data["sender"]),
                term=_int(data["term"]),
                leader=None if leader is None else _int(leader),
                stored=_int(data.get("stored", 0)),
                inflight=_int(data.get("inflight", 0)),
                config_hash=str(data.get("config_hash", "")),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"bad message: {exc}") from None
        return msg


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value


@dataclass(frozen=True)
class Send:
    to: int
    message: Message


@dataclass(frozen=True)
class Log:
    text: str


Action = Send | Log


@dataclass
class PeerView:
    """What this node knows of one other node."""

    id: int
    alive: bool = False
    last_heard: float | None = None
    term: int = 0
    role: str = "unknown"
    leader: int | None = None
    stored: int = 0
    inflight: int = 0
    config_hash: str = ""
    # False after a request from this node to it failed, until one succeeds: its messages
    # may still arrive (a firewall or route broken in one direction only).
    reachable: bool = True


@dataclass(frozen=True)
class Timings:
    heartbeat: float = 0.15
    leader_timeout: float = 0.6
    election_timeout: float = 0.3


@dataclass
class Election:
    node_id: int
    peer_ids: list[int]
    timings: Timings = field(default_factory=Timings)
    config_hash: str = ""
    role: Role = Role.CANDIDATE
    term: int = 0
    leader: int | None = None
    stored: int = 0
    inflight: int = 0
    peers: dict[int, PeerView] = field(default_factory=dict)
    _awaiting_alive: set[int] = field(default_factory=set)
    _election_deadline: float | None = None
    _coordinator_deadline: float | None = None
    _next_heartbeat: float = 0.0
    _warned_hash: set[int] = field(default_factory=set)
    _heartbeat_from: dict[int, float] = field(default_factory=dict)  # peer -> when it last sent one
    _unknown_said: dict[int, float] = field(default_factory=dict)  # unknown sender -> when logged
    _last_event: float | None = None  # when this machine was last fed an event (see _catch_up)

    def __post_init__(self) -> None:
        self.peer_ids = sorted(p for p in self.peer_ids if p != self.node_id)
        self.peers = {p: PeerView(p) for p in self.peer_ids}

    # ---- events -------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        self._last_event = now
        return self._begin_election(now, reason="starting")

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = self._catch_up(now)
        for view in self.peers.values():
            if view.alive and (view.last_heard is None
                               or now - view.last_heard >= self.timings.leader_timeout):
                view.alive = False
        if self.role is Role.CANDIDATE:
            if self._election_deadline is not None and now >= self._election_deadline:
                actions += self._become_leader(now)
            elif self._coordinator_deadline is not None and now >= self._coordinator_deadline:
                actions += self._begin_election(now, reason="no coordinator announced")
        elif self.role is Role.FOLLOWER and self.leader is not None \
                and not self.peers[self.leader].alive:
            actions += self._begin_election(now, reason=f"leader {self.leader} is silent")
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.timings.heartbeat
            actions += [Send(p, self._message(Kind.HEARTBEAT)) for p in self.peer_ids
                        if not self._answered_recently(p, now)]
        return actions

    def next_deadline(self) -> float:
        """When `tick` next has something to do, unless a message comes first: a heartbeat
        is due, a live peer's silence reaches `leader_timeout`, or an election's wait ends.
        The node ticks then, not on a fixed beat (an idle node wakes less), and asks again
        after every event it feeds in, since an event can bring a deadline forward."""
        due = [self._next_heartbeat]
        due += [v.last_heard + self.timings.leader_timeout for v in self.peers.values()
                if v.alive and v.last_heard is not None]
        if self.role is Role.CANDIDATE:
            due += [t for t in (self._election_deadline, self._coordinator_deadline)
                    if t is not None]
        return min(due)

    def _answered_recently(self, peer: int, now: float) -> bool:
        """Our ACK to the peer's heartbeat, less than a period ago, told it all our own
        heartbeat would (see the module's docstring)."""
        if self.role is Role.FOLLOWER and peer == self.leader:
            return False
        if not self.peers[peer].reachable:
            return False  # our heartbeat is the probe that finds it reachable again
        heard = self._heartbeat_from.get(peer)
        return heard is not None and now - heard < self.timings.heartbeat

    def receive(self, msg: Message, now: float) -> tuple[Message | None, list[Action]]:
        """A message arrived (a request, or the reply to one we sent).

        Returns the reply to send back (for requests) and the actions to carry out.
        """
        if msg.sender not in self.peers:
            # Said once a minute per sender, not at every heartbeat: typically a node taken
            # out of config.json that still runs, and says so several times a second.
            said = self._unknown_said.get(msg.sender)
            if said is not None and now - said < UNKNOWN_NODE_LOG_EVERY:
                return None, []
            self._unknown_said[msg.sender] = now
            return None, [Log(f"[Node {self.node_id}] ignoring messages from node {msg.sender}, "
                              "which is not in this node's config.json (a node taken out of "
                              "the cluster that still runs? stop or undeploy it)")]
        actions = self._catch_up(now) + self._note(msg, now)
        reply: Message | None = None
        if msg.kind is Kind.ELECTION:
            reply = self._message(Kind.ALIVE)
            if msg.sender < self.node_id:
                if self.role is Role.LEADER:
                    actions.append(Send(msg.sender, self._message(Kind.COORDINATOR)))
                elif self.role is Role.FOLLOWER and self._leader_alive_above_me():
                    pass  # our leader got the same ELECTION and answers it with COORDINATOR
                elif self.role is not Role.CANDIDATE:
                    actions += self._begin_election(now, reason=f"election from {msg.sender}")
        elif msg.kind is Kind.ALIVE:
            if msg.sender > self.node_id and self.role is Role.CANDIDATE:
                self._awaiting_alive.clear()
                self._election_deadline = None
                self._coordinator_deadline = (
                    now + self.timings.leader_timeout + self.timings.election_timeout)
        elif msg.kind in (Kind.COORDINATOR, Kind.HEARTBEAT):
            reply = self._message(Kind.ACK)
            if msg.kind is Kind.HEARTBEAT:
                self._heartbeat_from[msg.sender] = now
            if msg.kind is Kind.COORDINATOR or msg.leader == msg.sender:
                actions += self._leader_claim(msg, now)
        elif msg.kind is Kind.ACK and msg.leader == msg.sender:
            # A leader's answer to our heartbeat claims the lead as its own heartbeat would.
            actions += self._leader_claim(msg, now)
        if self.role is Role.LEADER and (
                msg.term > self.term
                or (msg.term == self.term and msg.leader not in (None, self.node_id))):
            # The peer has seen our term (or a later one) under another leader, e.g. we came
            # back after a failover: move past it so a term names one leadership.
            self.term = msg.term + 1
            actions += [Send(p, self._message(Kind.COORDINATOR)) for p in self.peer_ids]
            if reply is not None:
                reply = self._message(reply.kind)
        return reply, actions

    def delivery_failed(self, peer: int, kind: Kind, now: float) -> list[Action]:
        view = self.peers.get(peer)
        if view is None:
            return []
        view.alive = False
        actions: list[Action] = self._catch_up(now)
        if kind is Kind.ELECTION and peer in self._awaiting_alive:
            self._awaiting_alive.discard(peer)
            if not self._awaiting_alive and self.role is Role.CANDIDATE \
                    and self._election_deadline is not None:
                # Every higher node refused at once: no need to wait for the timeout.
                actions += self._become_leader(now)
        elif peer == self.leader and self.role is Role.FOLLOWER:
            actions += self._begin_election(now, reason=f"leader {peer} unreachable")
        return actions

    # ---- queries ------------------------------------------------------------------------

    def alive_ids(self) -> list[int]:
        """Ids that can take work now, this node included: alive, and reachable from here."""
        return sorted([self.node_id,
                       *(p for p, v in self.peers.items() if v.alive and v.reachable)])

    def reach(self, peer: int, ok: bool) -> bool:
        """A request of ours to `peer` succeeded or failed; True if that changes what we
        know. While it is unreachable we send it our own heartbeats (see
        _answered_recently), and the first that gets through makes it reachable again."""
        view = self.peers.get(peer)
        if view is None or view.reachable == ok:
            return False
        view.reachable = ok
        return True

    def config_mismatches(self) -> list[int]:
        return sorted(p for p, v in self.peers.items()
                      if v.config_hash and v.config_hash != self.config_hash)

    # ---- internals ----------------------------------------------------------------------

    def _catch_up(self, now: float) -> list[Action]:
        """Don't count against the peers a time this node itself was not running.

        The node feeds an event at least every heartbeat period (a heartbeat is always due
        within one, see next_deadline). A longer gap means it was not running: its event
        loop was blocked, or the process paused. Its peers' messages of that time are still
        waiting in its sockets, to be read right after this event, so every live peer's
        silence and every election wait is moved on by the part of the gap past one period.
        A peer that really died is then noticed that much later, never sooner."""
        last, self._last_event = self._last_event, now
        if last is None:
            return []
        gap = now - last
        if gap <= max(self.timings.heartbeat, self.timings.leader_timeout / 2):
            return []
        stalled = gap - self.timings.heartbeat
        for view in self.peers.values():
            if view.last_heard is not None:
                view.last_heard += stalled
        if self._election_deadline is not None:
            self._election_deadline += stalled
        if self._coordinator_deadline is not None:
            self._coordinator_deadline += stalled
        if gap < self.timings.leader_timeout:
            return []
        return [Log(f"[Node {self.node_id}] was not running for {gap:.2f} s (its event loop "
                    "was blocked); its peers' silence meanwhile is not held against them")]

    def _leader_alive_above_me(self) -> bool:
        return (self.leader is not None and self.leader > self.node_id
                and self.peers[self.leader].alive)

    def _message(self, kind: Kind) -> Message:
        return Message(kind, self.node_id, self.term, self.leader, self.stored, self.inflight,
                       self.config_hash)

    def _note(self, msg: Message, now: float) -> list[Action]:
        """Record what a message tells us about its sender."""
        view = self.peers[msg.sender]
        view.alive = True
        view.last_heard = now
        view.term, view.leader = msg.term, msg.leader
        view.stored, view.inflight = msg.stored, msg.inflight
        view.role = Role.LEADER.value if msg.leader == msg.sender else "follower"
        view.config_hash = msg.config_hash
        if msg.config_hash and msg.config_hash != self.config_hash \
                and msg.sender not in self._warned_hash:
            self._warned_hash.add(msg.sender)
            return [Log(f"[Node {self.node_id}] !!! CONFIG MISMATCH: node {msg.sender} runs "
                        f"config {msg.config_hash}, this node runs {self.config_hash}. All nodes "
                        "must have an identical config.json !!!")]
        if msg.config_hash == self.config_hash:
            self._warned_hash.discard(msg.sender)
        return []

    def _leader_claim(self, msg: Message, now: float) -> list[Action]:
        """`msg.sender` says it leads (COORDINATOR, or a heartbeat from a leader)."""
        claimant = msg.sender
        if claimant < self.node_id:
            # Bully: a live higher node never follows a lower one.
            if self.role is Role.LEADER:
                return [Send(claimant, self._message(Kind.COORDINATOR))]
            if self.role is Role.FOLLOWER and self.leader is not None \
                    and self.leader > claimant and self.peers[self.leader].alive:
                return []  # our leader bullies it (it hears the claim as we do)
            if self.role is Role.CANDIDATE:
                return []
            return self._begin_election(now, reason=f"lower node {claimant} claims to lead")
        if self.role is Role.FOLLOWER and self.leader is not None and self.leader > claimant \
                and self.peers[self.leader].alive:
            return []  # a stale claim; the higher leader wins
        changed = self.leader != claimant or self.role is not Role.FOLLOWER
        self.role = Role.FOLLOWER
        self.leader = claimant
        self.term = max(self.term, msg.term)
        self._awaiting_alive.clear()
        self._election_deadline = self._coordinator_deadline = None
        return [Log(f"[Node {self.node_id}] Coordinator announced: {claimant}")] if changed else []

    def _begin_election(self, now: float, reason: str) -> list[Action]:
        self.role = Role.CANDIDATE
        self.leader = None
        self._coordinator_deadline = None
        higher = [p for p in self.peer_ids if p > self.node_id]
        actions: list[Action] = [Log(f"[Node {self.node_id}] starting election ({reason})")]
        if not higher:
            return actions + self._become_leader(now)
        self._awaiting_alive = set(higher)
        self._election_deadline = now + self.timings.election_timeout
        actions += [Send(p, self._message(Kind.ELECTION)) for p in higher]
        return actions

    def _become_leader(self, now: float) -> list[Action]:
        self.role = Role.LEADER
        self.leader = self.node_id
        self.term = max([self.term, *(v.term for v in self.peers.values())]) + 1
        self._awaiting_alive.clear()
        self._election_deadline = self._coordinator_deadline = None
        self._next_heartbeat = now + self.timings.heartbeat
        return [
            Log(f"[Node {self.node_id}] no higher nodes -> becoming coordinator "
                f"(term {self.term})"),
            *(Send(p, self._message(Kind.COORDINATOR)) for p in self.peer_ids),
        ]


def snapshot(views: dict[int, PeerView]) -> dict[int, PeerView]:
    """A copy of the peer table that later events will not change."""
    return {p: replace(v) for p, v in views.items()}
