"""Prometheus metrics of one node (text exposition by prometheus_client)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self, node_id: int) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.uploads = Counter("cloudp2p_uploads", "Uploads answered by this node, by result",
                               ["result"], registry=r)
        self.stored_writes = Counter("cloudp2p_writes", "Durable writes on this node's disk",
                                     ["result"], registry=r)
        self.forwarded = Counter("cloudp2p_forwarded_uploads",
                                 "Uploads this follower passed to the leader", registry=r)
        self.streamed = Counter("cloudp2p_streamed_uploads",
                                "Uploads the leader passed on while the client was still sending",
                                registry=r)
        self.placements = Counter("cloudp2p_placements", "Images the leader placed, by node",
                                  ["node"], registry=r)
        self.refused = Counter("cloudp2p_refused_requests",
                               "Requests refused for a bad peer signature or client token",
                               ["why"], registry=r)
        self.elections = Counter("cloudp2p_leader_changes", "Leader changes seen", registry=r)
        self.index_fetches = Counter(
            "cloudp2p_index_fetches",
            "Whole copies of the leader's index fetched (a follower that could not resume)",
            registry=r)
        self.bytes_written = Counter("cloudp2p_bytes_written", "Image bytes written here",
                                     registry=r)
        self.upload_seconds = Histogram(
            "cloudp2p_upload_seconds", "Time to answer an upload (as seen by this node)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r)
        self.commits = Gauge("cloudp2p_disk_commits", "Group commits (disk flushes) so far",
                             registry=r)
        self.committed = Gauge("cloudp2p_disk_committed_writes",
                               "Writes those commits carried (committed / commits = batch size)",
                               registry=r)
        self.stored = Gauge("cloudp2p_stored_images", "Images stored on this node", registry=r)
        self.is_leader = Gauge("cloudp2p_is_leader", "1 if this node leads", registry=r)
        self.term = Gauge("cloudp2p_term", "Current election term", registry=r)
        self.peers_alive = Gauge("cloudp2p_peers_alive", "Other nodes heard from recently",
                                 registry=r)
        self.config_mismatch = Gauge("cloudp2p_config_mismatch",
                                     "Peers running a different config.json", registry=r)
        info = Gauge("cloudp2p_node_info", "This node's id", ["node"], registry=r)
        info.labels(node=str(node_id)).set(1)
        # The labelled series counted on every upload, looked up once (labels() costs a few
        # microseconds a call, and there are several per upload).
        self.upload_result = {result: self.uploads.labels(result=result)
                              for result in ("created", "exists", "conflict", "error")}
        self.write_result = {result: self.stored_writes.labels(result=result)
                             for result in ("created", "conflict", "disk_full", "error")}
        # Present at 0 from the start, so that a rate or an alert on them works before the
        # first refusal (a series that appears only later has no rate at first).
        self.refused_why = {why: self.refused.labels(why=why) for why in ("peer", "client")}
        self._placed: dict[int, Counter] = {}

    def placed(self, node: int) -> None:
        """One more image placed on `node` by this leader."""
        child = self._placed.get(node)
        if child is None:
            child = self._placed[node] = self.placements.labels(node=str(node))
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
