"""Enough file descriptors for `max_connections`.

Each open connection is a descriptor, and so is each peer connection, each image being
written and the node's own files. systemd starts services with a soft limit of 1024, which the
default `max_connections` (1024) alone would use up: past it, `accept` fails and new clients
wait in the backlog. The deploy's unit sets `LimitNOFILE`; a node started some other way raises
its own soft limit at start, as far as the hard limit allows, and says so if that is not
enough.
"""

from __future__ import annotations

import resource

# Descriptors beyond the connections: the image being written, the listening socket, the
# loop's own, log and config files.
RESERVED = 256


def needed(max_connections: int) -> int:
    """Inbound connections, plus the pools of connections to the peers (up to
    max_connections / nodes idle per peer, so less than max_connections in all)."""
    return 2 * max_connections + RESERVED


def plan(soft: int, hard: int, want: int) -> tuple[int | None, str | None]:
    """(the soft limit to set, or None to leave it; a warning, or None)."""
    unlimited = resource.RLIM_INFINITY
    if soft == unlimited or soft >= want:
        return None, None
    if hard == unlimited or hard >= want:
        return want, None
    return (hard if hard > soft else None), (
        f"at most {hard} open files (hard limit), but max_connections needs {want}: "
        f"lower max_connections or raise LimitNOFILE / ulimit -n")


def ensure(max_connections: int) -> str | None:
    """Raise the soft limit if needed and allowed; a warning if it stays too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed(max_connections)
    new_soft, warning = plan(soft, hard, want)
    if new_soft is not None:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        except (OSError, ValueError) as exc:  # a seccomp filter may forbid setrlimit
            return (f"at most {soft} open files, max_connections needs {want}, and the limit "
                    f"cannot be raised here ({exc}): set LimitNOFILE or ulimit -n")
    return warning
