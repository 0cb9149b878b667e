"""`cloud-p2p` / `python -m nodesvc`: run one node.

    SHARED_DIR=./shared_images NODE_ID=1 CONFIG_FILE=config.json cloud-p2p
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import os
import sys
from collections.abc import Callable

from nodesvc.config import ConfigError, load_settings
from nodesvc.logsink import BatchingHandler
from nodesvc.node import Node

EVENT_LOOPS = ("uvloop", "asyncio")

ENVIRONMENT = """\
environment:
  NODE_ID               this node's id in config.json (required)
  CONFIG_FILE           the cluster's config.json (default ./config.json)
  SHARED_DIR            where this node keeps its images (default: config.json's shared_dir)
  BIND                  host:port to listen on (default: this node's address in config.json)
  CLUSTER_SECRET_FILE   the secret every peer message is signed with (default: none, unsigned)
  CLIENT_TOKEN_FILE     the token uploads must carry (default: none, open uploads)
  CLOUD_P2P_EVENT_LOOP  uvloop (default) or asyncio
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The node takes its settings from the environment; the command line only has --help
    and --version, and anything else on it is a mistake (exit status 2, like a bad config)."""
    p = argparse.ArgumentParser(
        prog="cloud-p2p", description="Run one cloud-p2p node.",
        epilog=ENVIRONMENT + "\nexample: SHARED_DIR=./shared_images NODE_ID=1 "
                             "CONFIG_FILE=config.json cloud-p2p\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version",
                   version=f"cloud-p2p {importlib.metadata.version('cloud-p2p')}")
    return p.parse_args(argv)


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop (libuv): the node's sockets cost about half the CPU they do on asyncio's own
    loop. CLOUD_P2P_EVENT_LOOP=asyncio picks the standard loop (for comparison or debugging)."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop
    return asyncio.SelectorEventLoop


def main(argv: list[str] | None = None) -> int:
    parse_args(sys.argv[1:] if argv is None else argv)
    loop_name = os.environ.get("CLOUD_P2P_EVENT_LOOP") or "uvloop"
    if loop_name not in EVENT_LOOPS:
        print(f"cloud-p2p: error: CLOUD_P2P_EVENT_LOOP must be one of {', '.join(EVENT_LOOPS)}, "
              f"not {loop_name!r}", file=sys.stderr)
        return 2
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
        with asyncio.Runner(loop_factory=event_loop_factory(loop_name)) as runner:
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
