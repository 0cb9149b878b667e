"""Whether the other nodes believe this one: what they answered to its signed messages.

A node whose secret or clock differs from the cluster's hears nobody (it refuses their
messages) and is heard by nobody (they answer its messages 401), so it leads on its own, and
/healthz used to say 200 for it: a load balancer kept sending it uploads that the rest of the
cluster never learnt of. Counting the answers to its election messages tells it apart from a
node that is merely alone: a node is shunned when some peer refused it lately and no peer
accepted it lately. The others, which still accept one another, stay healthy, so one node
that is off does not take the cluster's health checks down with it.

Pure: the node reports each answer with the time it came (time.monotonic()).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    at: float
    accepted: bool
    detail: str = ""  # a refusal's reason, as the peer gave it


class Refusals:
    def __init__(self, fresh: float) -> None:
        self._fresh = fresh  # seconds an answer counts for
        self._last: dict[int, Answer] = {}

    def accepted(self, peer: int, now: float) -> None:
        self._last[peer] = Answer(now, True)

    def refused(self, peer: int, now: float, detail: str) -> None:
        self._last[peer] = Answer(now, False, detail)

    def shunned_by(self, now: float) -> dict[int, str]:
        """The peers that refuse this node, with their reasons, if no peer accepts it lately
        (else {})."""
        recent = {p: a for p, a in self._last.items() if now - a.at <= self._fresh}
        if any(a.accepted for a in recent.values()):
            return {}
        return {p: a.detail for p, a in sorted(recent.items())}
