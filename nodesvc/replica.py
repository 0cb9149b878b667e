"""Followers keep a copy of the leader's index (image name -> node holding it).

Without it, a node that takes over as leader knows only the names of the nodes it can ask;
a name held by a node that is down (the old leader, a node restarting in a rolling deploy)
looks free, and other bytes under it would be taken with 201. With the copy, the new leader
knows where that name is, and answers 503 "holder unreachable" as the old leader would have.

The leader numbers every change of its index (`ChangeLog`); a follower's heartbeat says how
far it has followed (`Replica.position`), and the leader's ACK carries the changes after that
(`ChangeLog.since`), a bounded batch at a time. A follower of another leadership (`epoch`),
or one so far behind that the changes it needs were dropped, is told to reset: it fetches the
whole index once (GET /peer/index) and follows from there. What a follower may miss is the
changes of the last heartbeat period before its leader died. A node that takes over and
cannot ask some node for its names asks the others for their copies (a restarted node has
none of its own). Pure logic: no I/O here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import orjson

from nodesvc.storage import valid_name

Change = tuple[str, int | None]  # (name, holder); None: the name is no longer held
Update = dict[str, Any]          # what an ACK carries (JSON), see ChangeLog.since

MAX_BATCH = 2000   # changes per ACK: a follower far behind catches up over a few heartbeats
KEEP = 50_000      # changes kept for followers that lag; one further behind resets


class ChangeLog:
    """The leader's side: its index's changes since it (last) learnt the whole index."""

    def __init__(self, keep: int = KEEP, batch: int = MAX_BATCH) -> None:
        self._keep = keep
        self._batch = batch
        self.restart()

    def restart(self) -> None:
        """A new epoch: the index was learnt anew, followers start again from a snapshot."""
        self.epoch = os.urandom(6).hex()
        self.base = 0  # the number of changes[0]
        self.changes: list[Change] = []

    @property
    def next(self) -> int:
        """The number the next change will get."""
        return self.base + len(self.changes)

    def record(self, name: str, holder: int | None) -> None:
        self.changes.append((name, holder))
        if len(self.changes) > self._keep:
            drop = len(self.changes) - self._keep // 2
            del self.changes[:drop]
            self.base += drop

    def since(self, epoch: object, position: object) -> Update:
        """The changes a follower at (`epoch`, `position`) has not seen, or a reset."""
        if epoch != self.epoch or not isinstance(position, int) or isinstance(position, bool) \
                or not self.base <= position <= self.next:
            return {"epoch": self.epoch, "reset": True}
        start = position - self.base
        batch = self.changes[start:start + self._batch]
        return {"epoch": self.epoch, "from": position, "changes": batch,
                "next": position + len(batch)}


class Replica:
    """The follower's side: how far it has followed its leader's ChangeLog."""

    def __init__(self) -> None:
        self.epoch = ""
        self.next = 0

    def position(self) -> dict[str, object]:
        return {"epoch": self.epoch, "next": self.next}

    def apply(self, index: dict[str, int], update: object, nodes: set[int]) -> bool:
        """Apply an ACK's update to `index`; True if a snapshot is needed first (a reset, or
        an update that does not follow on from here). A malformed update changes nothing.
        `nodes`: the ids a holder may have."""
        if not isinstance(update, dict) or not isinstance(update.get("epoch"), str):
            return False
        if update.get("reset") or update["epoch"] != self.epoch \
                or update.get("from") != self.next:
            return True
        changes = update.get("changes")
        end = update.get("next")
        if not isinstance(changes, list) or end != self.next + len(changes):
            return False
        parsed = [parse_change(c, nodes) for c in changes]
        if any(c is None for c in parsed):
            return False
        apply_changes(index, parsed)  # type: ignore[arg-type]
        self.next = end
        return False

    def adopt(self, whole: WholeIndex) -> None:
        """Follow on from a whole index (decode_snapshot's), which the caller now uses."""
        self.epoch, self.next = whole.epoch, whole.next

    def load(self, index: dict[str, int], snapshot: object, nodes: set[int]) -> bool:
        """Replace `index` with a whole one (GET /peer/index); False if it is malformed."""
        whole = whole_index(snapshot, nodes)
        if whole is None:
            return False
        index.clear()
        index.update(whole.index)
        self.adopt(whole)
        return True


@dataclass(frozen=True)
class WholeIndex:
    """A GET /peer/index answer, decoded and checked."""

    index: dict[str, int]
    epoch: str
    next: int


def decode_snapshot(body: bytes, nodes: set[int]) -> WholeIndex | None:
    """A GET /peer/index answer's bytes, decoded and checked entry by entry; None if it is
    not JSON or malformed. Slow for a large index (about a second for 600,000 names on a
    busy machine): the node runs it on a worker thread, so that its event loop goes on
    answering heartbeats meanwhile."""
    try:
        return whole_index(orjson.loads(body), nodes)
    except orjson.JSONDecodeError:
        return None


def whole_index(snapshot: object, nodes: set[int]) -> WholeIndex | None:
    """A decoded GET /peer/index answer, checked; None if it is malformed."""
    fresh = parse_snapshot(snapshot, nodes)
    if fresh is None:
        return None
    return WholeIndex(fresh, snapshot["epoch"], snapshot["next"])  # type: ignore[index]


def apply_changes(index: dict[str, int], changes: list[Change]) -> None:
    """Apply (name, holder) changes in order; holder None: the name is no longer held."""
    for name, holder in changes:
        if holder is None:
            index.pop(name, None)
        else:
            index[name] = holder


def parse_snapshot(snapshot: object, nodes: set[int]) -> dict[str, int] | None:
    """The index in a GET /peer/index answer, or None if it is malformed."""
    if not isinstance(snapshot, dict) or not isinstance(snapshot.get("epoch"), str) \
            or not isinstance(snapshot.get("next"), int) \
            or not isinstance(snapshot.get("index"), dict):
        return None
    fresh: dict[str, int] = {}
    for name, holder in snapshot["index"].items():
        change = parse_change([name, holder], nodes)
        if change is None or change[1] is None:
            return None
        fresh[name] = change[1]
    return fresh


def parse_change(item: object, nodes: set[int]) -> Change | None:
    if not isinstance(item, list | tuple) or len(item) != 2:
        return None
    name, holder = item
    if not isinstance(name, str) or not valid_name(name):
        return None
    if holder is not None and (isinstance(holder, bool) or holder not in nodes):
        return None
    return name, holder
