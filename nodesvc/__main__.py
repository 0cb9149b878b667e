"""`cloud-p2p` / `python -m nodesvc`: run one node.

    SHARED_DIR=./shared_images NODE_ID=1 CONFIG_FILE=config.json cloud-p2p
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable

from nodesvc.config import ConfigError, load_settings
from nodesvc.logsink import BatchingHandler
from nodesvc.node import Node


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop (libuv): the node's sockets cost about half the CPU they do on asyncio's own
    loop. CLOUD_P2P_EVENT_LOOP=asyncio picks the standard loop (for comparison or debugging)."""
    if os.environ.get("CLOUD_P2P_EVENT_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop
    return asyncio.SelectorEventLoop


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        print("\nEnvironment: NODE_ID (required), CONFIG_FILE (default ./config.json),")
        print("SHARED_DIR (overrides shared_dir), BIND (host:port, default: own peer address)")
        return 0
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        print(f"cloud-p2p: error: {exc}", file=sys.stderr)
        return 2
    # Lines are bare messages: skip what a record would gather for other formats (the caller's
    # file and line, found by walking the stack; thread, process names), on every line.
    logging._srcfile = None  # the logging docs' own advice, when lines need no caller
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.basicConfig(level=logging.INFO, format="%(message)s",
                        handlers=[BatchingHandler(sys.stdout.fileno())])
    node = Node(settings)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(node.run())
    except OSError as exc:  # the port is taken, or the address is not ours
        print(f"cloud-p2p: error: cannot listen on {settings.bind_host}:{settings.bind_port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
