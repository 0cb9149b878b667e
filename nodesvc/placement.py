"""Least-load placement: which node stores the next image (pure logic).

The leader counts the requests it has assigned to each node. A new leader does not start from
zero: it seeds the counts from what the nodes report (files stored plus writes in progress),
so the distribution stays balanced across leader changes and restarts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass
class Placement:
    assigned: dict[int, int] = field(default_factory=dict)
    # Reservations whose upload is still under way (part of `assigned` until settled).
    pending: dict[int, int] = field(default_factory=dict)

    def seed(self, reported: Mapping[int, int], held: Mapping[int, int] | None = None) -> None:
        """Start from the nodes' own reports (a new leader), and from `held`, what the
        leader's index says each node holds. A leader that re-learns the index goes on
        placing meanwhile: its reports were read before those placements, the index and the
        reservations still under way were not, so a node is never counted below them."""
        held = held or {}
        self.assigned = {n: max(reported.get(n, 0), held.get(n, 0) + self.pending.get(n, 0))
                         for n in set(reported) | set(held) | set(self.pending)}

    def observe(self, node: int, reported: int) -> None:
        """A node reported its load; never count below what it really holds."""
        if reported > self.assigned.get(node, 0):
            self.assigned[node] = reported

    def choose(self, candidates: Iterable[int], exclude: Iterable[int] = ()) -> int | None:
        """The node with the fewest assigned requests; ties go to the lowest id."""
        skip = set(exclude)
        live = [n for n in candidates if n not in skip]
        if not live:
            return None
        return min(live, key=lambda n: (self.assigned.get(n, 0), n))

    def reserve(self, node: int) -> None:
        """Count a request against `node` as soon as it is chosen, so that concurrent
        uploads spread out instead of all picking the same least-loaded node."""
        self.assigned[node] = self.assigned.get(node, 0) + 1
        self.pending[node] = self.pending.get(node, 0) + 1

    def confirm(self, node: int) -> None:
        """A reserved upload created its file there: it stays counted."""
        self.pending[node] = max(0, self.pending.get(node, 0) - 1)

    def release(self, node: int) -> None:
        """Undo a reservation whose upload did not create a file there."""
        self.assigned[node] = max(0, self.assigned.get(node, 0) - 1)
        self.pending[node] = max(0, self.pending.get(node, 0) - 1)

    def lost(self, node: int, images: int) -> None:
        """`node` no longer holds `images` it was counted for (a wiped disk)."""
        self.assigned[node] = max(self.pending.get(node, 0), self.assigned.get(node, 0) - images)

    def count(self, node: int) -> int:
        """What placement weighs: requests assigned to `node`, those under way included."""
        return self.assigned.get(node, 0)

    def recorded(self, node: int) -> int:
        """Requests `node` has taken, not counting those under way (the RECORDED log line:
        it then goes up by one per stored image, whatever the concurrency)."""
        return self.assigned.get(node, 0) - self.pending.get(node, 0)
