"""The running node: wires election, placement and storage to HTTP, and routes requests.

Request flow for an upload (`PUT /images/<name>`):
  follower  -> passes the whole request to the leader (retrying across a leader change);
  leader    -> if some node already holds the name, sends it there (200 same bytes, 409 other);
               else picks the least-loaded live node and asks it to store; a target that
               fails is replaced by the next one, so the client sees no error;
  target    -> durable write (storage.Store), then 201.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import orjson

from nodesvc import __version__, fdlimit
from nodesvc.auth import HEADER as AUTH_HEADER
from nodesvc.auth import SCHEME as PEER_AUTH_SCHEME
from nodesvc.auth import PeerAuth
from nodesvc.config import NodeSettings
from nodesvc.election import Action, Election, Kind, Log, Message, Role, Send, Timings
from nodesvc.groupcommit import GroupCommit
from nodesvc.http import (
    HttpClient,
    HttpServer,
    PeerUnreachable,
    Request,
    Response,
    ServerLimits,
    SourceFailed,
    Tee,
    error,
    json_response,
)
from nodesvc.indexcopy import Batch, Followed, IndexCopy, IndexFile
from nodesvc.metrics import Metrics
from nodesvc.placement import Placement
from nodesvc.refusals import Refusals
from nodesvc.relearn import relearn
from nodesvc.replica import ChangeLog, Replica, WholeIndex, apply_changes, decode_snapshot
from nodesvc.storage import (
    Conflict,
    DiskFull,
    Store,
    Stored,
    Write,
    generated_name,
    valid_name,
)
from nodesvc.stream import start_server
from nodesvc.systemd import Notifier

log = logging.getLogger("nodesvc")

FORWARDED = "x-cloud-p2p-forwarded"  # set by a follower passing an upload to the leader
LOCAL_ONLY = "x-cloud-p2p-local"     # GET: answer only from this node's own disk
UPLOAD_DEADLINE = 8.0                # how long a node tries to find a leader for an upload
# Uploads larger than this are passed on to their target while they arrive (less memory held,
# the target starts sooner); smaller ones are read whole first: measured on the lab at 64
# concurrent 64 KiB and 1 MiB uploads, streaming them cost 10-15% more CPU per upload
# (chunked framing, one write per piece) for no gain in throughput.
STREAM_ABOVE = 1 << 20
# A leader's 503s that a follower passing an upload on waits out (another 503, "holder
# unreachable" say, is the answer: asking again for 8 s would not change it).
LEADER_CHANGING = frozenset({"not leader", "not ready", "no leader"})
REFUSAL_LOG_EVERY = 60.0  # seconds between two log lines about one kind of refused message
TICK_AT_LEAST = 1.0  # seconds between ticks at most, whatever the election's timers say
INDEX_SAVE_EVERY = 1.0  # seconds between two writes of the index's changes to disk, at least
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
                 "gif": "image/gif", "webp": "image/webp", "bmp": "image/bmp",
                 "tif": "image/tiff", "tiff": "image/tiff"}


class KeyedLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def hold(self, key: str) -> _Held:
        """`async with locks.hold(key):` (a class, not an asynccontextmanager: that
        generator machinery cost 2-4% of a node's CPU per upload)."""
        return _Held(self, key)

    async def _acquire(self, key: str) -> None:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:  # cancelled while waiting: no longer a user
            self._drop_user(key)
            raise

    def _release(self, key: str) -> None:
        self._locks[key][0].release()
        self._drop_user(key)

    def _drop_user(self, key: str) -> None:
        lock, users = self._locks[key]
        if users == 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)

    def __contains__(self, key: str) -> bool:
        return key in self._locks

    def keys(self) -> list[str]:
        return list(self._locks)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._locks))


class Node:
    def __init__(self, settings: NodeSettings, notifier: Notifier | None = None) -> None:
        cfg = settings.config
        self.settings = settings
        self.id = settings.node_id
        self.addresses = {p.id: (p.host, p.port) for p in cfg.peers}
        self.store = Store(settings.shared_dir, durable=cfg.durability == "fsync")
        self.election = Election(
            self.id, cfg.ids,
            Timings(cfg.heartbeat_ms / 1000, cfg.leader_timeout_ms / 1000,
                    cfg.election_timeout_ms / 1000),
            config_hash=cfg.hash)
        self.placement = Placement()
        # What the peers answer to our election messages: all refusing means our secret or
        # clock is not the cluster's (refusals.py), and /healthz says so.
        self.refusals = Refusals(fresh=10 * cfg.leader_timeout_ms / 1000)
        # Idle connections kept per peer: enough for every upload in flight to come back to
        # the pool (with 16, a leader serving 64 clients opened a new connection for a
        # quarter of its forwards, 4-7% of the cluster's CPU), yet all peers' pools together
        # stay within each node's max_connections.
        self.client = HttpClient(connect_timeout=cfg.election_timeout_ms / 1000,
                                 max_idle=cfg.max_connections // len(cfg.ids))
        self.auth = PeerAuth(settings.secret, self.id) if settings.secret else None
        self._client_token = settings.client_token
        self.server = HttpServer(self.handle, ServerLimits(
            max_body=cfg.max_image_bytes, header_timeout=cfg.client_timeout_ms / 1000,
            max_connections=cfg.max_connections), streams=self._streams_body)
        self.metrics = Metrics(self.id)
        self.notifier = notifier or Notifier()
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="disk")
        # Every image write goes to this one thread, which writes and flushes in batches
        # (one thread hop per write; the executor is for reads and index work).
        self.committer: GroupCommit[Write, Stored] = GroupCommit(self.store.write_batch)
        # Image name -> node holding it: the leader's own, a follower's copy of it (replica.py)
        self.index: dict[str, int] = {}
        self.index_ready = asyncio.Event()       # leader only: index synced after election
        self.changes = ChangeLog()               # leader: the index's changes, for followers
        self.replica = Replica()                 # follower: how far it follows them
        self.index_file = IndexFile(settings.shared_dir)  # the index kept on disk
        self.index_copy = IndexCopy()            # ... and what to write there next
        self._saving_index = False
        self._index_saved_at = 0.0
        self._said_index_unsaved = False
        self._fetching_index = False             # follower: a snapshot is being fetched
        self.leader_known = asyncio.Event()
        self.place_locks = KeyedLocks()          # leader: one placement per name at a time
        self.write_locks = KeyedLocks()          # target: one write per name at a time
        self.started = time.monotonic()
        self._last_leader: int | None = None
        self._leadership = 0  # bumped at every leader change; stale index syncs check it
        self._synced_term = -1
        self._known_alive: set[int] = set()
        self._said_unreachable: set[int] = set()  # peers we logged as unreachable (_reached)
        self._syncing: set[int] = set()  # peers whose names _sync_peer is fetching
        self._refusals_said: dict[str, tuple[float, int]] = {}  # see _log_refusal
        self._heartbeats_in_flight: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._requests_in_flight = 0
        self._tick_handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick_at = 0.0
        self._last_status = 0.0

    # ---- lifecycle ----------------------------------------------------------------------

    async def run(self, started: asyncio.Event | None = None) -> None:
        loop = self._loop = asyncio.get_running_loop()
        removed = await loop.run_in_executor(self.executor, self.store.open)
        for name in removed:
            log.info("[Node %d] removed leftover temporary file %s", self.id, name)
        loaded = await loop.run_in_executor(
            self.executor, self.index_file.load, self._node_ids())
        self.index = loaded.index
        if loaded.problem is not None:
            log.warning("[Node %d] index kept on disk: %s", self.id, loaded.problem)
        if loaded.follows is not None:  # a follower: it resumes where it was
            self.replica.epoch = loaded.follows.epoch
            self.replica.next = loaded.follows.next
        s = self.settings
        fd_warning = fdlimit.ensure(s.config.max_connections)
        if fd_warning is not None:
            log.warning("[Node %d] %s", self.id, fd_warning)
        server = await start_server(self.server.serve, s.bind_host, s.bind_port,
                                    reuse_address=True, backlog=1024)
        log.info("[Node %d] listening on %s:%d (%d images in %s, config %s)", self.id,
                 s.bind_host, s.bind_port, len(self.store), s.shared_dir, s.config.hash)
        if not self.store.durable:
            log.warning("[Node %d] durability is \"none\": images are acknowledged before they "
                        "reach the disk and can be lost in a power cut", self.id)
        if self.auth is None:
            log.warning("[Node %d] peer authentication is OFF (no CLUSTER_SECRET_FILE): "
                        "anyone who reaches this port can take part in elections", self.id)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        self._apply(self.election.start(time.monotonic()))
        self.notifier.notify(READY="1", STATUS=self.status_line())
        if started is not None:
            started.set()
        await self._stop.wait()
        log.info("[Node %d] stopping", self.id)
        self.notifier.notify(STOPPING="1")
        server.close()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        deadline = time.monotonic() + 5
        while self._requests_in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # let acknowledged work finish
        await self.client.close()
        while self._saving_index:  # the write under way ...
            await asyncio.sleep(0.01)
        self._save_index()  # ... then what changed since the last tick, written before exit
        while self._saving_index:
            await asyncio.sleep(0.01)
        self.executor.shutdown(wait=True)
        self.committer.close()

    def stop(self) -> None:
        self._stop.set()

    def _tick(self) -> None:
        """What the passing of time does: the election's timers, the leader's view of the
        loads, systemd's status and watchdog. It runs when the election next has something
        to do (Election.next_deadline), and at least every TICK_AT_LEAST seconds, instead of
        on a fixed beat: an idle node wakes about once a heartbeat period."""
        self._tick_handle = None
        try:
            now = time.monotonic()
            self._refresh_load()
            self._apply(self.election.tick(now))
            if self.election.role is Role.LEADER:
                self.placement.observe(self.id, len(self.store))
                for pid, view in self.election.peers.items():
                    if view.alive:
                        self.placement.observe(pid, view.stored + view.inflight)
            self._save_index(now)
            if now - self._last_status > 2:
                self._last_status = now
                self.notifier.notify(STATUS=self.status_line())
                if self.notifier.watchdog_interval:
                    self.notifier.notify(WATCHDOG="1")
        finally:
            self._schedule_tick()  # even after a bug (the loop logs it): time must go on

    def _schedule_tick(self) -> None:
        """(Re)arm the one tick timer for the election's next deadline, if that is sooner
        than the armed one. Called after every election event."""
        if self._stop.is_set() or self._loop is None:
            return
        now = time.monotonic()
        at = max(now + 0.001, min(self.election.next_deadline(), now + TICK_AT_LEAST))
        if self._tick_handle is not None:
            if self._tick_at <= at:
                return
            self._tick_handle.cancel()
        self._tick_at = at
        self._tick_handle = self._loop.call_later(at - now, self._tick)

    # ---- election I/O -------------------------------------------------------------------

    def _refresh_load(self) -> None:
        """What our election messages report: images stored and writes in progress."""
        self.election.stored = len(self.store)
        self.election.inflight = self._inflight()

    def _apply(self, actions: Iterable[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._spawn(self._send(action.to, action.message))
            elif isinstance(action, Log):
                log.info("%s", action.text)
        self._after_election_event()
        self._schedule_tick()

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, to: int, msg: Message) -> None:
        if msg.kind is Kind.HEARTBEAT:
            if to in self._heartbeats_in_flight:
                return  # the last one has not come back yet; don't pile up
            self._heartbeats_in_flight.add(to)
        timeout = self.election.timings.leader_timeout
        body = msg.to_dict()
        following = msg.kind is Kind.HEARTBEAT and to == self.election.leader \
            and self.election.role is Role.FOLLOWER
        if following:
            body["index"] = self.replica.position()  # (a node of an older release ignores it)
        try:
            resp = await self._peer_request(to, "POST", "/peer/msg", orjson.dumps(body),
                                            [("content-type", "application/json")], timeout)
            data = orjson.loads(resp.body) if resp.status == 200 else None
            reply = Message.from_dict(data) if data is not None else None
            if resp.status == 401:
                self.refusals.refused(to, time.monotonic(), _detail(resp.body))
            elif reply is not None:
                self.refusals.accepted(to, time.monotonic())
        except (PeerUnreachable, ValueError) as exc:
            # A refused connection is a dead peer; a slow answer is not (yet): the tick's
            # silence timeout decides that, so a busy leader is not deposed for being busy.
            refused = isinstance(exc, PeerUnreachable) and exc.refused
            if refused or msg.kind is Kind.ELECTION:
                self._apply(self.election.delivery_failed(to, msg.kind, time.monotonic()))
            return
        finally:
            self._heartbeats_in_flight.discard(to)
        if reply is not None:
            _, actions = self.election.receive(reply, time.monotonic())
            self._apply(actions)
            if following and "index" in data and to == self.election.leader:
                self._follow(to, data["index"])

    def _follow(self, leader: int, update: object) -> None:
        """Apply the index changes an ACK of our leader carried (replica.py)."""
        before = self.replica.next
        if self.replica.apply(self.index, update, self._node_ids()):
            self._spawn(self._fetch_index(leader))
        elif self.replica.next != before:  # applied: its changes were all valid
            for name, holder in update["changes"]:  # type: ignore[index]
                self.index_copy.changed(name, holder)
            self.index_copy.followed(self.replica.epoch, self.replica.next)

    def _record(self, name: str, holder: int | None) -> None:
        """The leader's index changed: for its followers (ChangeLog) and its disk."""
        self.changes.record(name, holder)
        self.index_copy.changed(name, holder)

    def _save_index(self, now: float | None = None) -> None:
        """Write what changed in the index since the last write (from the tick, at most every
        INDEX_SAVE_EVERY seconds; with no `now`, at once), unless a write is under way."""
        if self._saving_index or not self.index_copy.pending:
            return
        if now is not None:
            if now - self._index_saved_at < INDEX_SAVE_EVERY:
                return
            self._index_saved_at = now
        follows = Followed(self.replica.epoch, self.replica.next) \
            if self.election.role is Role.FOLLOWER and self.replica.epoch else None
        batch = self.index_copy.take(self.index, follows)
        if batch is not None:
            self._saving_index = True
            self._spawn(self._write_index(batch))

    async def _write_index(self, batch: Batch) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(
                self.executor, self.index_file.write, batch)
            if self._said_index_unsaved:
                self._said_index_unsaved = False
                log.info("[Node %d] the index is kept on disk again", self.id)
        except OSError as exc:
            self.index_copy.failed()  # (the next tick tries again, whole)
            if not self._said_index_unsaved:
                self._said_index_unsaved = True
                log.warning("[Node %d] cannot keep the index on disk (%s): a restart starts "
                            "from what the other nodes know", self.id, exc)
        finally:
            self._saving_index = False

    def _node_ids(self) -> set[int]:
        return {self.id, *self.election.peer_ids}

    async def _fetch_index(self, leader: int) -> None:
        """A follower's copy of the leader's index, whole (see replica.py)."""
        if self._fetching_index:
            return
        self._fetching_index = True
        try:
            whole = await self._get_index(leader)
        finally:
            self._fetching_index = False
        if whole is not None and self.election.leader == leader \
                and self.election.role is Role.FOLLOWER:
            self.index = whole.index
            self.replica.adopt(whole)
            self.index_copy.replaced()
            self.metrics.index_fetches.inc()
        # (none: the next heartbeat asks again)

    async def _get_index(self, pid: int) -> WholeIndex | None:
        """A node's GET /peer/index answer, decoded and checked on a worker thread (None if
        it gave none, or a malformed one)."""
        try:
            resp = await self._peer_request(pid, "GET", "/peer/index", timeout=30.0)
        except PeerUnreachable:
            return None
        if resp.status != 200:
            return None
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, decode_snapshot, resp.body, self._node_ids())

    def _after_election_event(self) -> None:
        """React to a change of leader or of the set of live peers."""
        e = self.election
        if e.leader is None:
            self.leader_known.clear()
        else:
            self.leader_known.set()
        if e.leader != self._last_leader:
            self._last_leader = e.leader
            self.metrics.elections.inc()
            self._leadership += 1
            self.index_ready.clear()  # (the index stays: a new leader starts from it)
            if e.role is Role.LEADER:
                self._synced_term = e.term
                self.replica = Replica()  # (its index is its own now, at no leader's position)
                self._spawn(self._sync_index())
            self.notifier.notify(STATUS=self.status_line())
        elif e.role is Role.LEADER and e.term != self._synced_term:
            # Still leading, but under a new term: another node led meanwhile (we were paused
            # or cut off) and placed images we do not know of. Re-learn the index (and find
            # duplicates) while going on serving with the one we have.
            self._synced_term = e.term
            self._spawn(self._sync_index())
        alive = {p for p, v in e.peers.items() if v.alive}
        if e.role is Role.LEADER and self.index_ready.is_set():
            for pid in alive - self._known_alive:
                self._spawn(self._sync_peer(pid))  # a node came back: learn what it holds
        self._known_alive = alive

    # ---- the leader's name index --------------------------------------------------------

    async def _fetch_names(self, pid: int) -> list[str] | None:
        try:
            resp = await self._peer_request(pid, "GET", "/peer/names",
                                            timeout=max(1.0, self.election.timings.leader_timeout))
        except PeerUnreachable:
            return None
        if resp.status != 200:
            return None
        names = orjson.loads(resp.body).get("names", [])
        return [n for n in names if isinstance(n, str)]

    async def _sync_index(self) -> None:
        """A new leader learns which node holds which name before placing anything."""
        generation = self._leadership
        # Ask every node except those known dead (the old leader, typically): waiting for a
        # silent one would hold up every upload. A node that comes back is synced then.
        views = self.election.peers
        ask = [p for p in self.election.peer_ids
               if views[p].alive or views[p].last_heard is None]
        # What this node knew when it started asking: the index it led with, or its copy of
        # the last leader's. Names on a node that cannot be asked now are known from it.
        seed = dict(self.index)
        fetched = await asyncio.gather(*(self._fetch_names(p) for p in ask))
        results = [fetched[ask.index(p)] if p in ask else None for p in self.election.peer_ids]
        if self._leadership != generation or self.election.role is not Role.LEADER:
            return  # lost (or lost and regained) leadership meanwhile: that sync is stale
        asked = {self.id} | {p for p, names in zip(self.election.peer_ids, results,
                                                   strict=True) if names is not None}
        copy: dict[str, int] | None = None
        if set(self.election.peer_ids) - asked:
            # Where the names of a node not asked are, another node's copy says (one copy is
            # enough: they are copies of one index).
            for pid in sorted(asked - {self.id}):
                whole = await self._get_index(pid)
                if whole is not None and whole.index:
                    copy = whole.index
                    break
        if self._leadership != generation or self.election.role is not Role.LEADER:
            return
        # The index is worked out on a worker thread (relearn.py), from copies; what changes
        # meanwhile (placements go on during a re-sync) is caught up from the change log.
        epoch, mark = self.changes.epoch, self.changes.next
        learnt = await asyncio.get_running_loop().run_in_executor(
            self.executor, relearn, self.id, self._local_names(),
            dict(zip(self.election.peer_ids, results, strict=True)), dict(self.index), seed,
            copy)
        if self._leadership != generation or self.election.role is not Role.LEADER:
            return
        if self.changes.epoch == epoch and mark >= self.changes.base:
            apply_changes(learnt.index, self.changes.changes[mark - self.changes.base:])
        else:  # (the log moved on too far: take the live index's names once more)
            for name, holder in self.index.items():
                learnt.index.setdefault(name, holder)
        self.index = learnt.index
        duplicates = learnt.duplicates
        reported = {self.id: len(self.store) + self._inflight()}
        for pid, names in zip(self.election.peer_ids, results, strict=True):
            view = self.election.peers[pid]
            reported[pid] = view.stored + view.inflight
            if names is not None:
                reported[pid] = max(reported[pid], len(names))
        for pid, names in sorted(learnt.missing.items()):
            _say_lost(self.id, pid, sorted(names))
        # (The index counts what was placed while we were asking, and the names a node not
        # asked holds.)
        self.placement.seed(reported, Counter(self.index.values()))
        self.changes.restart()  # followers fetch this index whole, then follow its changes
        self.index_copy.replaced()
        self.index_ready.set()
        for pid, names in zip(self.election.peer_ids, results, strict=True):
            if names is None and self.election.peers[pid].alive:
                # It came back (or answered again) while we were asking the others: its
                # return was seen before the index was ready, so nothing else asks it now.
                self._spawn(self._sync_peer(pid))
        # Once per term led: a second line means another node claimed the same term (nodes
        # started together) or led meanwhile, and the index was learnt again.
        log.info("[Node %d] leader index ready (term %d): %d images, loads %s", self.id,
                 self.election.term, len(self.index),
                 {n: self.placement.count(n) for n in sorted(reported)})
        if duplicates:
            self._spawn(self._resolve_duplicates(duplicates))

    async def _sync_peer(self, pid: int) -> None:
        # A node that comes back is seen twice (its election, then alive again): one sync.
        if pid in self._syncing:
            return
        self._syncing.add(pid)
        try:
            names = await self._fetch_names(pid)
        finally:
            self._syncing.discard(pid)
        if names is None or self.election.role is not Role.LEADER:
            return
        self._forget_lost(pid, set(names))
        duplicates = self._merge_names(pid, names)
        self.placement.observe(pid, len(names))
        if duplicates:
            await self._resolve_duplicates(duplicates)

    def _forget_lost(self, pid: int, names: set[str]) -> None:
        """A node came back without images it held (its disk was wiped or replaced): say so
        loudly, and stop counting them, so reads answer 404 at once and placement weighs
        what the node really holds."""
        lost = sorted(n for n, holder in self.index.items() if holder == pid and n not in names)
        if not lost:
            return
        for name in lost:
            del self.index[name]
            self._record(name, None)
        self.placement.lost(pid, len(lost))
        _say_lost(self.id, pid, lost)

    def _merge_names(self, pid: int, names: list[str]) -> dict[str, set[int]]:
        """Add a node's names to the index; return the names some other node holds too,
        with the nodes that claim them."""
        duplicates: dict[str, set[int]] = {}
        for name in names:
            holder = self.index.setdefault(name, pid)
            if holder != pid:
                duplicates[name] = {holder, pid}
            elif self.index_ready.is_set():
                self._record(name, pid)  # (before: the whole index is sent anyway)
        return duplicates

    async def _resolve_duplicates(self, names: dict[str, set[int]]) -> None:
        """Two nodes hold one name. That happens when a node stored an image and died before
        answering, and the client's retry was placed elsewhere. The bytes are the same: keep
        the newest copy (the retry, the one the client was told about), delete the others.
        Copies with different bytes are never deleted, only reported."""
        for name, claimed in sorted(names.items()):
            metas: dict[int, tuple[str, int]] = {}
            for attempt in range(20):
                # A claimed copy may still be being written (a node that was paused mid-write
                # finishes it when it resumes): wait for it rather than miss the duplicate.
                if attempt:
                    await asyncio.sleep(0.5)
                for pid in [self.id, *self.election.peer_ids]:
                    meta = await self._meta(pid, name)
                    if meta is not None:
                        metas[pid] = meta
                if claimed <= set(metas) or self.election.role is not Role.LEADER:
                    break
            if len(metas) < 2:
                continue
            if len({sha for sha, _ in metas.values()}) > 1:
                log.error("[Node %d] !!! CONFLICT: %s has different bytes on nodes %s; "
                          "left as is", self.id, name, sorted(metas))
                continue
            keep = max(metas, key=lambda p: (metas[p][1], -p))
            for pid, (sha, _) in metas.items():
                if pid != keep and await self._drop_copy(pid, name, sha):
                    log.info("[Node %d] removed duplicate of %s from node %d (kept node %d)",
                             self.id, name, pid, keep)
            self.index[name] = keep
            self._record(name, keep)

    async def _meta(self, pid: int, name: str) -> tuple[str, int] | None:
        if pid == self.id:
            return await asyncio.get_running_loop().run_in_executor(
                self.executor, self.store.meta, name)
        try:
            resp = await self._peer_request(pid, "GET", f"/peer/meta/{name}")
        except PeerUnreachable:
            return None
        if resp.status != 200:
            return None
        data = orjson.loads(resp.body)
        return str(data["sha256"]), int(data["mtime_ns"])

    async def _drop_copy(self, pid: int, name: str, sha: str) -> bool:
        if pid == self.id:
            return await self._remove_local(name, sha)
        try:
            resp = await self._peer_request(pid, "DELETE", f"/peer/store/{name}?sha256={sha}")
        except PeerUnreachable:
            return False
        return resp.status == 204

    async def _remove_local(self, name: str, sha: str) -> bool:
        async with self.write_locks.hold(name):
            return await asyncio.get_running_loop().run_in_executor(
                self.executor, self.store.remove_copy, name, sha)

    def _local_names(self) -> list[str]:
        return [*self.store.names(), *self._writing()]

    def _writing(self) -> list[str]:
        """Names being written and not stored yet. A write is in the store as soon as its
        batch commits, a moment before its lock is released: counting it in both would
        make this node look one image fuller than it is."""
        return [n for n in self.write_locks if n not in self.store]

    def _inflight(self) -> int:
        return len(self._writing())

    # ---- HTTP routing -------------------------------------------------------------------

    async def _peer_request(self, pid: int, method: str, target: str, body: bytes = b"",
                            headers: Iterable[tuple[str, str]] = (),
                            timeout: float = 10.0, image: bool = False) -> Response:
        """A request to another node, signed when the cluster has a secret (over its head
        only for an `image`, which the storing node hashes itself: see nodesvc/auth.py). An
        image upload asks for `100 Continue`, so a peer that went silent (power cut,
        partition, pause) is given up on after `leader_timeout`, not after `timeout`."""
        host, port = self.addresses[pid]
        all_headers = list(headers)
        if self.auth is not None:
            all_headers.append((AUTH_HEADER, self.auth.sign(method, target, body,
                                                            head_only=image)))
        try:
            resp = await self.client.request(
                host, port, method, target, body, all_headers, timeout,
                expect_continue=self.election.timings.leader_timeout if method == "PUT"
                else None)
        except PeerUnreachable as exc:
            self._reached(pid, exc)
            raise
        self._reached(pid, None)
        return resp

    def _reached(self, pid: int, failure: PeerUnreachable | None) -> None:
        """Keep track of whether our requests reach `pid`, and say when that changes: a
        node whose messages arrive but which cannot be reached from here (a firewall or a
        route broken one way) is otherwise invisible, and takes no uploads meanwhile."""
        if not self.election.reach(pid, failure is None):
            return
        if failure is None:
            if pid in self._said_unreachable:
                self._said_unreachable.discard(pid)
                log.info("[Node %d] node %d is reachable again", self.id, pid)
        elif self.election.peers[pid].alive and not failure.refused:
            # (Refused: the process is gone, a restart say; a dead node is no news. Silence
            # from a node whose messages arrive is.)
            self._said_unreachable.add(pid)
            log.warning("[Node %d] cannot reach node %d (%s) although its messages arrive: "
                        "a firewall or route blocking this direction? It takes no uploads "
                        "until it can be reached", self.id, pid, failure.reason)

    def _refusal(self, req: Request) -> Response | None:
        """401 for an unsigned peer request or an upload without the client token."""
        peer_only = req.path.startswith("/peer/") or FORWARDED in req.headers \
            or LOCAL_ONLY in req.headers
        if peer_only and self.auth is not None:
            signature = req.headers.get(AUTH_HEADER) or req.trailers.get(AUTH_HEADER)
            reason = self.auth.verify(signature, req.method, req.target, req.body,
                                      req.body_sha256, head_only_ok=_is_image_put(req))
            if reason is not None:
                self.metrics.refused_why["peer"].inc()
                self._log_refusal(f"{req.method} {req.path[:80]}", reason)
                return error(401, "unauthorized", reason,
                             headers=[("www-authenticate", PEER_AUTH_SCHEME)])
        elif self._client_token is not None and req.path.startswith("/images") \
                and req.method in ("PUT", "POST"):
            given = req.headers.get("authorization", "").removeprefix("Bearer ").encode()
            if not hmac.compare_digest(given, self._client_token):
                self.metrics.refused_why["client"].inc()
                return error(401, "unauthorized", "uploads need Authorization: Bearer <token>",
                             headers=[("www-authenticate", "Bearer")])
        return None

    def _log_refusal(self, request: str, reason: str) -> None:
        """Once a minute per reason: a peer with a wrong secret or a clock out of sync sends
        several messages a second, and the line would drown the log."""
        kind = reason.partition(" reads ")[0]  # (a clock: each node's, whatever its offset)
        now = time.monotonic()
        said, skipped = self._refusals_said.get(kind, (None, 0))
        if said is not None and now - said < REFUSAL_LOG_EVERY:
            self._refusals_said[kind] = (said, skipped + 1)
            return
        self._refusals_said[kind] = (now, 0)
        more = f" ({skipped} more like it in the last minute)" if skipped else ""
        log.warning("[Node %d] refused %s: %s%s", self.id, request, reason, more)

    def _streams_body(self, req: Request) -> bool:
        """The leader passes a client's large upload (or one of unknown length) on to its
        target as it arrives; the rest is read whole: small uploads (see STREAM_ABOVE), peer
        messages, forwarded uploads (signed over their body)."""
        length = req.content_length
        return (req.method == "PUT" and req.path.startswith("/images/")
                and FORWARDED not in req.headers and self.election.role is Role.LEADER
                and (length is None or length > STREAM_ABOVE))

    async def handle(self, req: Request) -> Response:
        self._requests_in_flight += 1
        try:
            return await self._route(req)
        finally:
            self._requests_in_flight -= 1

    async def _route(self, req: Request) -> Response:
        refusal = self._refusal(req)
        if refusal is not None:
            return refusal
        path, method = req.path, req.method
        if path.startswith("/images/"):
            name = path[len("/images/"):]
            if method == "PUT":
                return await self._timed_upload(req, name)
            if method in ("GET", "HEAD"):
                return await self.get_image(req, name)
            return _not_allowed("GET, HEAD, PUT")
        if path == "/images":
            if method == "POST":
                return await self._timed_upload(req, generated_name(req.body))
            return _not_allowed("POST")
        if path.startswith("/peer/store/"):
            name = path[len("/peer/store/"):]
            if method == "PUT":
                return await self.store_local(name, req.body, req.known_sha256)
            if method == "DELETE":
                return await self.peer_drop_copy(req, name)
            return _not_allowed("PUT, DELETE")
        if path.startswith("/peer/meta/"):
            if method != "GET":
                return _not_allowed("GET")
            return await self.peer_meta(path[len("/peer/meta/"):])
        routes = {
            "/peer/msg": ("POST", self.peer_message),
            "/peer/names": ("GET", self.peer_names),
            "/peer/index": ("GET", self.peer_index),
            "/status": ("GET", self.status),
            "/metrics": ("GET", self.metrics_text),
            "/healthz": ("GET", self.healthz),
        }
        if path in routes:
            allowed, handler = routes[path]
            if method == allowed or (method == "HEAD" and allowed == "GET"):
                return await handler(req)  # (the server sends a HEAD's answer without body)
            return _not_allowed("GET, HEAD" if allowed == "GET" else allowed)
        return error(404, "not found", f"no route for {path}")

    # ---- uploads ------------------------------------------------------------------------

    async def _timed_upload(self, req: Request, name: str) -> Response:
        t0 = time.monotonic()
        resp = await self.upload(req, name)
        self.metrics.upload_seconds.observe(time.monotonic() - t0)
        result = {201: "created", 200: "exists", 409: "conflict"}.get(resp.status, "error")
        self.metrics.upload_result[result].inc()
        return resp

    async def upload(self, req: Request, name: str) -> Response:
        if not valid_name(name):
            return error(400, "invalid name",
                         "names match [A-Za-z0-9][A-Za-z0-9._-]{0,254}")
        if req.stream is None and not req.body:
            return _empty_image()
        if FORWARDED in req.headers:
            if self.election.role is not Role.LEADER:
                return error(503, "not leader", f"node {self.id} no longer leads",
                             headers=[("retry-after", "1")])
            return await self.place(name, Tee.of(req.body))  # signed by a follower
        body = Tee(req.stream.chunks(), req.content_length) if req.stream is not None \
            else Tee.of(req.body)
        deadline = time.monotonic() + UPLOAD_DEADLINE
        while True:
            leader = await self._await_leader(deadline)
            if leader is None:
                return error(503, "no leader", "no leader elected yet",
                             headers=[("retry-after", "1")])
            if leader == self.id:
                return await self.place(name, body)
            await body.read()  # a follower passes the upload on whole
            try:
                resp = await self._send_image(leader, f"/images/{name}", body,
                                              [(FORWARDED, str(self.id))])
            except PeerUnreachable as exc:
                log.info("[Node %d] leader %d unreachable (%s); waiting for a new one",
                         self.id, leader, exc)
                if exc.refused:  # gone for sure; a mere timeout is left to the heartbeats
                    self._apply(self.election.delivery_failed(leader, Kind.HEARTBEAT,
                                                              time.monotonic()))
                await asyncio.sleep(0.05)
                if time.monotonic() > deadline:
                    return error(503, "leader unreachable", str(exc),
                                 headers=[("retry-after", "1")])
                continue
            if resp.status == 503 and time.monotonic() < deadline \
                    and _error_of(resp) in LEADER_CHANGING:
                await asyncio.sleep(0.05)  # the leader is changing; ask again
                continue
            self.metrics.forwarded.inc()
            return resp

    async def _await_leader(self, deadline: float) -> int | None:
        while self.election.leader is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.leader_known.wait(), remaining)
        return self.election.leader

    async def place(self, name: str, body: Tee) -> Response:
        """The leader's part: find where `name` goes and have it stored there. The body is
        passed on as it arrives from the client, and kept, in case the target fails and the
        next one needs it all."""
        if not self.index_ready.is_set():  # (wait_for makes a task: not on every upload)
            try:
                await asyncio.wait_for(self.index_ready.wait(), UPLOAD_DEADLINE)
            except TimeoutError:
                return error(503, "not ready", "leader index not synced",
                             headers=[("retry-after", "1")])
        async with self.place_locks.hold(name):
            holder = self.index.get(name)
            if holder is not None:
                try:
                    return await self._store_on(holder, name, body)
                except PeerUnreachable:
                    return error(503, "holder unreachable",
                                 f"node {holder} holds {name} and cannot be reached",
                                 headers=[("retry-after", "1")])
            tried: set[int] = set()
            disk_full: Response | None = None
            while True:
                target = self.placement.choose(self.election.alive_ids(), exclude=tried)
                if target is None:
                    return disk_full or error(503, "no live node",
                                              "no node can store the image now",
                                              headers=[("retry-after", "1")])
                self.placement.reserve(target)
                try:
                    resp = await self._store_on(target, name, body)
                except PeerUnreachable as exc:
                    log.info("[LeastLoad] node %d failed mid-upload (%s); trying the next",
                             target, exc)
                    self.placement.release(target)
                    tried.add(target)
                    continue
                except BaseException:  # the client broke off: nothing was placed
                    self.placement.release(target)
                    raise
                if resp.status != 201:
                    self.placement.release(target)
                if resp.status == 507:
                    tried.add(target)  # that disk is full: another node may have room
                    disk_full = resp
                    continue
                if resp.status in (200, 201):
                    self.index[name] = target
                    self._record(name, target)
                if resp.status == 201:
                    self.placement.confirm(target)
                    self.metrics.placed(target)
                    log.info("[LeastLoad] RECORDED: Node %d now has %d total requests",
                             target, self.placement.recorded(target))
                return resp

    async def _store_on(self, target: int, name: str, body: Tee) -> Response:
        if target == self.id:
            data = await body.read()
            return await self.store_local(name, data, None)  # (hashed by the committer)
        resp = await self._send_image(target, f"/peer/store/{name}", body)
        if resp.status >= 500 and resp.status != 507:
            raise PeerUnreachable(f"node {target} answered {resp.status}")
        return resp

    async def _send_image(self, pid: int, path: str, body: Tee,
                          headers: Iterable[tuple[str, str]] = ()) -> Response:
        """An image to another node, signed over its head: whole, with a Content-Length, if
        it is read or small, else passed on as it arrives. A node of a release from before
        head-only signatures refuses that with 401: during a rolling upgrade it gets the image
        again, whole and signed over its body (tests/integration/test_upgrade.py)."""
        headers = list(headers)  # sent twice, perhaps
        if body.complete or (body.length is not None and body.length <= STREAM_ABOVE):
            resp = await self._peer_request(pid, "PUT", path, await body.read(), headers,
                                            timeout=UPLOAD_DEADLINE * 2, image=True)
        else:
            resp = await self._stream_to(pid, path, body, headers)
        if resp.status == 401 and self.auth is not None:
            resp = await self._peer_request(pid, "PUT", path, await body.read(), headers,
                                            timeout=UPLOAD_DEADLINE * 2)
        return resp

    async def _stream_to(self, target: int, path: str, body: Tee,
                         extra: Iterable[tuple[str, str]] = ()) -> Response:
        """Pass a large upload on as it arrives, chunked, signed over its head (an image)."""
        host, port = self.addresses[target]
        headers = [*extra, *([(AUTH_HEADER, self.auth.sign("PUT", path, head_only=True))]
                             if self.auth is not None else [])]
        if not body.complete:
            self.metrics.streamed.inc()
        try:
            resp = await self.client.stream(
                host, port, "PUT", path, body, headers, timeout=UPLOAD_DEADLINE * 2,
                wait=self.election.timings.leader_timeout)
        except SourceFailed as exc:
            raise exc.cause from None
        return resp

    async def store_local(self, name: str, body: bytes, sha256: bytes | None) -> Response:
        """The target's part: a durable write on this node's disk. `sha256`: the body's
        digest if known; else the committer computes it."""
        if not valid_name(name):
            return error(400, "invalid name", name[:80])
        if not body:  # (a streamed upload is known to be empty only here)
            return _empty_image()
        async with self.write_locks.hold(name):
            try:
                digest = sha256.hex() if sha256 else None
                stored = await self.committer.commit(Write(name, body, digest))
            except Conflict as exc:
                self.metrics.write_result["conflict"].inc()
                return error(409, "conflict",
                             f"{name} exists with other bytes (sha256 {exc.existing_sha256})")
            except DiskFull as exc:
                self.metrics.write_result["disk_full"].inc()
                log.error("[Node %d] disk full, %s not stored: %s", self.id, name, exc)
                return error(507, "disk full", f"node {self.id} has no space left")
            except OSError as exc:
                self.metrics.write_result["error"].inc()
                log.error("[Node %d] write of %s failed: %s", self.id, name, exc)
                return error(500, "write failed", exc.strerror or str(exc))
        if stored.created:
            self.metrics.write_result["created"].inc()
            self.metrics.bytes_written.inc(stored.size)
            log.info('[Node %d] ✓ Saved image to "%s"', self.id, self.store.filename(name))
        body_json = {"name": name, "node": self.id, "sha256": stored.sha256,
                     "bytes": stored.size}
        return json_response(201 if stored.created else 200, body_json)

    # ---- reads --------------------------------------------------------------------------

    async def get_image(self, req: Request, name: str) -> Response:
        if not valid_name(name):
            return error(400, "invalid name", "names match [A-Za-z0-9][A-Za-z0-9._-]{0,254}")
        loop = asyncio.get_running_loop()
        ctype = CONTENT_TYPES.get(name.rsplit(".", 1)[-1].lower(), "application/octet-stream")
        here = [("x-cloud-p2p-node", str(self.id))]
        try:
            if req.method == "HEAD":  # the size from the file system, not the bytes
                size = await loop.run_in_executor(self.executor, self.store.size, name)
                if size is not None:
                    return Response(200, b"", ctype, here, length=size)
            else:
                data = await loop.run_in_executor(self.executor, self.store.read, name)
                if data is not None:
                    return Response(200, data, ctype, here)
        except OSError as exc:  # (its file made unreadable by hand, say)
            log.error("[Node %d] cannot read %s: %s", self.id, self.store.filename(name), exc)
            return error(500, "read failed", f"node {self.id} holds {name} and cannot read it: "
                         f"{exc.strerror or exc}")
        if LOCAL_ONLY in req.headers:
            return error(404, "not found", f"{name} is not on node {self.id}")
        # Ask the node the leader's index names first, then the live nodes, then the rest
        # (a node we have not heard from yet may still answer).
        hint = self.index.get(name)  # (a follower's copy of the leader's index, too)
        alive = set(self.election.alive_ids())
        others = sorted((p for p in self.election.peer_ids if p != hint),
                        key=lambda p: (p not in alive, p))
        order = ([hint] if hint is not None and hint != self.id else []) + others
        unasked: list[int] = []
        failed: list[str] = []  # nodes that answered, with an error
        for pid in order:
            try:  # (a GET for a HEAD too: the server sends only the head of its answer)
                resp = await self._peer_request(pid, "GET", f"/images/{name}",
                                                headers=[(LOCAL_ONLY, "1")])
            except PeerUnreachable:
                unasked.append(pid)
                continue
            if resp.status == 200:
                return resp
            if resp.status != 404:  # (a node that is starting, or overloaded, or broken)
                failed.append(f"node {pid} answered {resp.status}")
        if unasked or failed:
            # Not "not found": the image may well be on a node that did not give it.
            why = failed + ([f"node(s) {', '.join(map(str, sorted(unasked)))} could not be "
                             f"asked"] if unasked else [])
            return error(503, "unavailable",
                         f"{name} is on no node that answered; {'; '.join(why)}",
                         headers=[("retry-after", "1")])
        return error(404, "not found", f"no node holds {name}")

    # ---- peer and operator endpoints ----------------------------------------------------

    async def peer_message(self, req: Request) -> Response:
        try:
            data = orjson.loads(req.body)
            msg = Message.from_dict(data)
        except (orjson.JSONDecodeError, ValueError) as exc:
            return error(400, "bad message", str(exc))
        self._refresh_load()
        reply, actions = self.election.receive(msg, time.monotonic())
        self._apply(actions)
        if msg.kind is Kind.ELECTION and self.election.role is Role.LEADER \
                and self.index_ready.is_set() and msg.sender in self.election.peers:
            # A node that starts calls an election, even one back sooner than its silence
            # would have shown: learn what it holds now (a wiped disk: see _forget_lost).
            self._spawn(self._sync_peer(msg.sender))
        if reply is None:
            return Response(204)
        answer = reply.to_dict()
        if msg.kind is Kind.HEARTBEAT and "index" in data and self.index_ready.is_set() \
                and self.election.role is Role.LEADER:
            position = data["index"] if isinstance(data["index"], dict) else {}
            answer["index"] = self.changes.since(position.get("epoch"), position.get("next"))
        return json_response(200, answer)

    async def peer_index(self, req: Request) -> Response:
        """The leader's whole index, for a follower that starts following it; a follower's
        copy, for a node that takes over (replica.py)."""
        if self.election.role is Role.LEADER:
            if not self.index_ready.is_set():
                return error(503, "not ready", f"node {self.id} is learning the index",
                             headers=[("retry-after", "1")])
            epoch, position = self.changes.epoch, self.changes.next
        else:
            epoch, position = self.replica.epoch, self.replica.next
        return json_response(200, {"epoch": epoch, "next": position, "index": self.index})

    async def peer_meta(self, name: str) -> Response:
        if not valid_name(name):
            return error(400, "invalid name", name[:80])
        meta = await asyncio.get_running_loop().run_in_executor(
            self.executor, self.store.meta, name)
        if meta is None:
            return error(404, "not found", f"{name} is not on node {self.id}")
        return json_response(200, {"name": name, "sha256": meta[0], "mtime_ns": meta[1]})

    async def peer_drop_copy(self, req: Request, name: str) -> Response:
        """The leader removes a redundant copy; only with the matching sha256."""
        query = req.target.partition("?")[2]
        sha = query[len("sha256="):] if query.startswith("sha256=") else ""
        if not valid_name(name) or len(sha) != 64:
            return error(400, "bad request", "DELETE /peer/store/<name>?sha256=<hex>")
        if await self._remove_local(name, sha):
            log.info("[Node %d] removed redundant copy of %s", self.id, name)
            return Response(204)
        return error(409, "not removed", f"{name} is not here with sha256 {sha}")

    async def peer_names(self, req: Request) -> Response:
        return json_response(200, {"node": self.id, "names": self._local_names()})

    def status_dict(self) -> dict[str, object]:
        e = self.election
        me = {"id": self.id, "address": self._address(self.id), "alive": True,
              "reachable": True,
              "self": True, "role": e.role.value, "stored": len(self.store),
              "inflight": self._inflight(), "term": e.term,
              "config_hash": self.settings.config.hash}
        rows = [me]
        for pid, view in e.peers.items():
            row = asdict(view)
            row.pop("last_heard")
            row["address"] = self._address(pid)
            row["self"] = False
            rows.append(row)
        leading = e.role is Role.LEADER
        for row in rows:
            row["assigned"] = self.placement.count(int(row["id"])) if leading else None  # type: ignore[call-overload]
        rows.sort(key=lambda r: int(r["id"]))  # type: ignore[call-overload]
        return {
            "node_id": self.id, "role": e.role.value, "leader": e.leader, "term": e.term,
            "stored": len(self.store), "version": __version__,
            "config_hash": self.settings.config.hash,
            "config_mismatch": e.config_mismatches(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "peers": rows,
        }

    async def status(self, req: Request) -> Response:
        return json_response(200, self.status_dict())

    async def metrics_text(self, req: Request) -> Response:
        e = self.election
        m = self.metrics
        m.stored.set(len(self.store))
        m.commits.set(self.committer.batches)
        m.committed.set(self.committer.items)
        m.is_leader.set(1 if e.role is Role.LEADER else 0)
        m.term.set(e.term)
        m.peers_alive.set(sum(1 for v in e.peers.values() if v.alive))
        m.config_mismatch.set(len(e.config_mismatches()))
        return Response(200, m.render(), "text/plain; version=0.0.4; charset=utf-8")

    async def healthz(self, req: Request) -> Response:
        e = self.election
        shunned = self.refusals.shunned_by(time.monotonic())
        healthy = e.leader is not None and (e.leader == self.id or e.peers[e.leader].alive) \
            and not shunned
        if healthy:
            return json_response(200, {"ok": True, "leader": e.leader})
        body: dict[str, object] = {"ok": False, "leader": e.leader, "role": e.role.value}
        if shunned:
            body["refused_by"] = {str(p): why for p, why in shunned.items()}
        return json_response(503, body)

    def _address(self, pid: int) -> str:
        host, port = self.addresses[pid]
        return f"{host}:{port}"

    def status_line(self) -> str:
        e = self.election
        if e.role is Role.LEADER:
            alive = len(e.alive_ids())
            who = f"leader of {alive}/{len(e.peer_ids) + 1} nodes"
        elif e.role is Role.FOLLOWER:
            who = f"follower of node {e.leader}"
        else:
            who = "electing a leader"
        warn = f", CONFIG MISMATCH with {e.config_mismatches()}" if e.config_mismatches() else ""
        shunned = self.refusals.shunned_by(time.monotonic())
        if shunned:
            warn += f", REFUSED by nodes {sorted(shunned)} (cluster secret or clock differs)"
        return f"{who}, term {e.term}, {len(self.store)} images stored{warn}"


class _Held:
    """What KeyedLocks.hold returns: the lock for one key, as an async context manager."""

    def __init__(self, locks: KeyedLocks, key: str) -> None:
        self._locks = locks
        self._key = key

    async def __aenter__(self) -> None:
        await self._locks._acquire(self._key)

    async def __aexit__(self, *exc: object) -> None:
        self._locks._release(self._key)


def _error_of(resp: Response) -> str:
    try:
        data = orjson.loads(resp.body)
    except orjson.JSONDecodeError:
        return ""
    return str(data.get("error", "")) if isinstance(data, dict) else ""


def _say_lost(me: int, pid: int, lost: list[str]) -> None:
    log.error("[Node %d] !!! node %d came back without %d image(s) it held (%s%s): its "
              "disk was wiped or replaced? They are gone unless copied back into its "
              "shared_dir", me, pid, len(lost), ", ".join(lost[:3]),
              ", ..." if len(lost) > 3 else "")


def _is_image_put(req: Request) -> bool:
    """An image passed on between nodes: to the node that stores it, or from a follower to
    the leader. Only these may be signed over their head alone."""
    return req.method == "PUT" and (req.path.startswith("/peer/store/")
                                    or (FORWARDED in req.headers
                                        and req.path.startswith("/images/")))


def _empty_image() -> Response:
    return error(400, "empty image", "the body holds no bytes (an upload needs the image as "
                 "its body, with a Content-Length or chunked)")


def _not_allowed(allowed: str) -> Response:
    return error(405, "method not allowed", f"use {allowed}", headers=[("allow", allowed)])


def _detail(body: bytes) -> str:
    """The reason an error answer gives (its "detail"), or the start of its body."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("detail"), str):
        return data["detail"][:200]
    return body[:200].decode("utf-8", "replace")
