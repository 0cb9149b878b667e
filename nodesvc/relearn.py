"""How a new leader learns which node holds which name, from what the nodes say (pure logic).

Node._sync_index asks every node it can reach for its names, then hands them to `relearn` on a
worker thread. For 600,000 names it is about half a second of CPU; run on the event loop it
held up the leader's heartbeats for longer than `leader_timeout_ms`, its followers called it
silent and elected again, which made it learn the index again: elections without end on a
cluster that stores many images. The changes the leader makes to its index while this runs
(placements go on during a re-sync) are applied afterwards from its change log
(`replica.apply_changes`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Learnt:
    index: dict[str, int]             # name -> the node holding it
    duplicates: dict[str, set[int]]   # names that more than one node says it holds
    missing: dict[int, list[str]]     # names a node was asked for and no longer holds


def relearn(me: int, local: list[str], answers: dict[int, list[str] | None],
            previous: dict[str, int], seed: dict[str, int],
            copy: dict[str, int] | None = None) -> Learnt:
    """The index, from this node's own names (`local`), every other node's answer (None: not
    asked, or no answer), the index the leader had when the answers were in (`previous`:
    placements made while asking), the one it had before asking (`seed`), and, when some
    node could not be asked, another node's copy of the last index (`copy`: where that
    node's names are)."""
    asked = {me} | {pid for pid, names in answers.items() if names is not None}
    if copy:
        seed = dict(seed)
        for name, holder in copy.items():
            if holder not in asked:
                seed.setdefault(name, holder)
    index = dict.fromkeys(local, me)
    duplicates: dict[str, set[int]] = {}
    for pid, names in answers.items():
        if names is None:
            continue
        for name in names:
            holder = index.setdefault(name, pid)
            if holder != pid:
                duplicates.setdefault(name, set()).update((holder, pid))
    missing: dict[int, list[str]] = {}
    for name, holder in previous.items():
        if name in index:
            continue
        if holder in asked and seed.get(name) == holder:
            missing.setdefault(holder, []).append(name)  # asked, and it has it no more
        else:
            index[name] = holder  # placed while we were asking, or on a node not asked
    for name, holder in seed.items():
        if holder not in asked:  # a node that could not be asked: it still holds these
            index.setdefault(name, holder)
    return Learnt(index, duplicates, missing)

