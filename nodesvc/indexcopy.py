"""This node's index (image name -> node holding it) kept on disk, so that it outlives a
restart.

In memory only, it was gone whenever its node restarted. A leader that restarted while it could
reach no other node, or a whole cluster that lost power while one node stayed down, started
from the names of the nodes it could ask and nothing else: a name held by a node still down
looked free, and other bytes under it could be taken with 201 (two contents, one name, once the
node came back). Now each node loads its last index at start, and a new leader seeds its
index from it as it would from the copy it had in memory (Node._sync_index).

It is a cache, corrected by what the nodes say they hold: a leader asks every node it can for
its names. So it is written about once a second (the node's tick), off the event loop, and
fsynced then (one flush a second, against the images' hundreds): a power cut loses at most
the changes of the last second or so, as the in-memory copy of a follower already lags its
leader by a heartbeat period.

The file, `<shared_dir>/.cloud-p2p/index`, holds JSON lines:
  {"index": {"name": holder, ...}}   a snapshot: replaces every line before it (it is always
                                     the first line: a snapshot rewrites the file)
  ["name", holder]                   one change; holder null: the name is no longer held
  {"follows": ["epoch", next]}       a follower's position in its leader's change log
                                     (replica.py) once the lines before it are applied; a
                                     snapshot of a follower carries one too
A torn last line (a crash in the middle of a write) ends the load there. The file is rewritten
as one snapshot when the changes since the last snapshot outnumber twice the names indexed.
A follower that restarts resumes from its last position: its leader sends the changes after
it, not the whole index again (a torn line can leave the index a few changes past that
position; replaying them sets the same holders again).

`IndexCopy` (the event loop's side) is pure: it decides what to write. `IndexFile` does the
blocking I/O, on one thread at a time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import orjson

from nodesvc.replica import Change, parse_change
from nodesvc.storage import fsync_directory

DIRECTORY = ".cloud-p2p"  # inside shared_dir: never an image name (names start alnum)
FILENAME = "index"
COMPACT_AT_LEAST = 10_000  # changes appended before a snapshot is worth rewriting


@dataclass(frozen=True)
class Followed:
    """A follower's position in its leader's change log (replica.Replica.position)."""

    epoch: str
    next: int


@dataclass(frozen=True)
class Snapshot:
    index: dict[str, int]
    follows: Followed | None = None  # a follower's position for exactly this index


Batch = Snapshot | list[Change | Followed]  # what one write puts on disk


class Loaded(NamedTuple):
    """What IndexFile.load read back."""

    index: dict[str, int]
    problem: str | None = None      # what went wrong, if something did (index: up to there)
    follows: Followed | None = None  # a follower's last position in its leader's log


class IndexCopy:
    """What the index's changes since the last write mean for the file: appended lines, or a
    whole new snapshot (after the index was replaced, or once the appended lines are many)."""

    def __init__(self, compact_at_least: int = COMPACT_AT_LEAST) -> None:
        self._compact_at_least = compact_at_least
        self._changes: list[Change | Followed] = []
        self._replaced = True   # the file starts with a snapshot of what the node loaded
        self._appended = 0      # change lines in the file after its snapshot

    def changed(self, name: str, holder: int | None) -> None:
        if not self._replaced:  # (a snapshot to come holds it anyway)
            self._changes.append((name, holder))

    def followed(self, epoch: str, next_change: int) -> None:
        """A follower applied its leader's changes up to `next_change` (after the changed()
        calls for them)."""
        if self._replaced:
            return
        if self._changes and isinstance(self._changes[-1], Followed):
            self._changes.pop()  # no change since: only the newer position counts
        self._changes.append(Followed(epoch, next_change))

    def replaced(self) -> None:
        """The index was replaced whole (learnt anew, or a leader's snapshot loaded)."""
        self._replaced = True
        self._changes = []

    @property
    def pending(self) -> bool:
        return self._replaced or bool(self._changes)

    def take(self, index: dict[str, int], follows: Followed | None = None) -> Batch | None:
        """What to write now, for an index that is `index` (None: nothing); `follows`: the
        position a follower's `index` is at, for a snapshot. A snapshot is a copy, taken here
        on the event loop: the writing thread must not iterate a dict that the loop
        changes."""
        if self._replaced or (self._changes and self._appended + len(self._changes)
                              > max(self._compact_at_least, 2 * len(index))):
            self._replaced = False
            self._changes = []
            self._appended = 0
            return Snapshot(dict(index), follows)
        if not self._changes:
            return None
        batch, self._changes = self._changes, []
        self._appended += len(batch)
        return batch

    def failed(self) -> None:
        """The last write did not reach the file: the next one rewrites it whole."""
        self._replaced = True
        self._changes = []


class IndexFile:
    """The file itself. Blocking: the node calls it from a thread, one call at a time."""

    def __init__(self, shared_dir: Path) -> None:
        self.directory = shared_dir / DIRECTORY
        self.path = self.directory / FILENAME

    def load(self, nodes: set[int]) -> Loaded:
        """The index the file holds, names on nodes outside `nodes` left out (taken out of the
        config since), what went wrong if something did (the index up to there is kept),
        and the last position the node followed its leader at, if the file is a
        follower's."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return Loaded({})
        except OSError as exc:
            return Loaded({}, f"cannot read {self.path}: {exc.strerror or exc}")
        index: dict[str, int] = {}
        follows: Followed | None = None
        for number, line in enumerate(data.split(b"\n"), start=1):
            if not line:
                continue
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                return Loaded(index, f"{self.path} line {number} is torn or not JSON; read up "
                                     "to it", follows)
            if isinstance(item, dict) and isinstance(item.get("index"), dict):
                follows = _followed(item.get("follows"))  # (a leader's: none)
                index = {}
                for name, holder in item["index"].items():
                    change = parse_change([name, holder], nodes)
                    if change is not None and change[1] is not None:
                        index[name] = change[1]
            elif isinstance(item, dict) and "follows" in item:
                follows = _followed(item["follows"])
            elif (change := parse_change(item, nodes)) is not None:
                name, holder = change
                if holder is None:
                    index.pop(name, None)
                else:
                    index[name] = holder
            # (anything else: a holder no longer in the config, say; skipped)
        return Loaded(index, None, follows)

    def write(self, batch: Batch) -> None:
        """Put `batch` on disk: a snapshot replaces the file (a new file renamed over it),
        changes are appended. Raises OSError."""
        if isinstance(batch, Snapshot):
            self.directory.mkdir(exist_ok=True)
            tmp = self.path.with_name(f"{FILENAME}.new")
            line: dict[str, object] = {"index": batch.index}
            if batch.follows is not None:
                line["follows"] = [batch.follows.epoch, batch.follows.next]
            _write(tmp, "wb", orjson.dumps(line) + b"\n")
            os.replace(tmp, self.path)
            fsync_directory(self.directory)  # (else a crash may bring the old file back)
            return
        _write(self.path, "ab", b"".join(orjson.dumps(
            {"follows": [item.epoch, item.next]} if isinstance(item, Followed) else item) + b"\n"
            for item in batch))


def _followed(item: object) -> Followed | None:
    if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) \
            and isinstance(item[1], int) and not isinstance(item[1], bool) and item[1] >= 0:
        return Followed(item[0], item[1])
    return None


def _write(path: Path, mode: str, data: bytes) -> None:
    with open(path, mode) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
