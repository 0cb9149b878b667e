"""`python -m cloudlab up|down|status|ssh` — the lab's command line."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cloudlab import hosts, image, inventory, network
from cloudlab.plan import STATE_DIR, SUBNET, HostPlan, gateway
from cloudlab.plan import hosts as plan_hosts

TOOLS = {"systemd-nspawn": "systemd-container", "mmdebstrap": "mmdebstrap",
         "ip": "iproute2", "ssh": "openssh-client"}


class LabError(Exception):
    pass


def _check_machine() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (containers, namespaces, mounts)")
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise LabError(f"missing tools; install them with: apt-get install -y {' '.join(missing)}")


def existing_hosts() -> list[HostPlan]:
    if not STATE_DIR.is_dir():
        return []
    found = [HostPlan(int(d.name[1:])) for d in STATE_DIR.iterdir()
             if d.is_dir() and d.name[:1] == "h" and d.name[1:].isdigit()]
    return sorted(found, key=lambda h: h.n)


def node_hosts() -> list[HostPlan]:
    """The running lab's nodes: its hosts but the client-only ones (`up --client-hosts`)."""
    found = existing_hosts()
    if not inventory.INVENTORY.exists():
        return found
    nodes, _ = inventory.layout(inventory.INVENTORY.read_text())
    return found[:nodes]


def up(count: int, flavour: str = "base", client_hosts: int = 0) -> list[HostPlan]:
    """`count` node hosts, then `client_hosts` more that the inventory lists apart (not nodes)."""
    _check_machine()
    t0 = time.monotonic()
    total = count + client_hosts
    wanted = plan_hosts(total)
    extra = [h for h in existing_hosts() if h.n > total]
    if extra:
        raise LabError(f"the lab has {len(extra) + total}+ hosts; run `down` first to shrink it")
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    key = hosts.ensure_key()
    print(f"image: {image.image_dir(flavour)}"
          + ("" if image.image_dir(flavour).exists() else " (building it, about a minute)"))
    img = image.ensure_image(STATE_DIR / "image-build.log", flavour)
    network.ensure_bridge()
    starting = []
    for h in wanted:
        if hosts.pid_of(h) is not None and network.netns_exists(h.netns):
            continue  # already up: leave it alone
        hosts.remove_rootfs(h)
        network.fresh_netns(h)
        hosts.make_rootfs(h, img)
        hosts.start(h)
        starting.append(h)
    with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
        states = list(pool.map(hosts.wait_ready, wanted))
    inventory.INVENTORY.parent.mkdir(parents=True, exist_ok=True)
    inventory.INVENTORY.write_text(inventory.render(wanted, key, sys.executable, client_hosts))
    print(f"lab up in {time.monotonic() - t0:.1f}s "
          f"({len(starting)} started, {len(wanted) - len(starting)} already running)")
    _table(wanted, states)
    print(f"inventory: {inventory.INVENTORY}")
    return wanted


def down() -> None:
    _check_machine()
    found = existing_hosts()
    for h in found:
        hosts.stop(h)
    for h in found:
        hosts.remove_rootfs(h)
        network.remove_netns(h)
    # Namespaces whose state dir was lost (a crash between steps) go too.
    for ns in Path("/run/netns").glob("cp2p-h*") if Path("/run/netns").is_dir() else []:
        if ns.name[6:].isdigit():
            network.remove_netns(HostPlan(int(ns.name[6:])))
    network.remove_bridge()
    inventory.INVENTORY.unlink(missing_ok=True)
    # The stress play's client config names the lab's addresses too: nothing may point
    # at them once the lab is gone.
    client_config = inventory.INVENTORY.parents[1] / "reports" / "client-config.json"
    if client_config.is_file() and str(SUBNET.network_address)[:-1] in client_config.read_text():
        client_config.unlink()
    print(f"lab down ({len(found)} hosts removed)")


def status() -> int:
    _check_machine()
    found = existing_hosts()
    if not found:
        print("lab is down")
        return 3
    states = [hosts.system_state(h) if hosts.pid_of(h) else "stopped" for h in found]
    _table(found, states)
    return 0 if all(s in ("running", "degraded") for s in states) else 3


def _table(found: list[HostPlan], states: list[str]) -> None:
    print(f"{'HOST':5} {'ADDRESS':14} {'STATE':12} PID")
    for h, state in zip(found, states, strict=True):
        print(f"{h.name:5} {h.address:14} {state:12} {hosts.pid_of(h) or '-'}")
    print(f"(the machine is {gateway()} on the lab bridge)")


def _existing(n: int) -> HostPlan:
    _check_machine()
    h = HostPlan(n)
    if h not in existing_hosts():
        raise LabError(f"the lab has no {h.name} (python -m cloudlab status)")
    return h


def stop_host(n: int, power_cut: bool) -> None:
    """Shut a host down cleanly, or pull its plug (its cable too: no answer at all, not
    even a refused connection), keeping its disk: `start` boots it again."""
    h = _existing(n)
    if hosts.pid_of(h) is None:
        print(f"{h.name} is already stopped")
        return
    if power_cut:
        network.set_link(h, up=False)
        hosts.power_off(h)
    else:
        hosts.stop(h)
    print(f"{h.name} {'powered off' if power_cut else 'shut down'} "
          f"(python -m cloudlab start {n} boots it again)")


def start_host(n: int) -> None:
    h = _existing(n)
    if hosts.pid_of(h) is not None:
        print(f"{h.name} is already running")
        return
    network.set_link(h, up=True)
    hosts.start(h)
    print(f"{h.name} {hosts.wait_ready(h)}")


def ssh(n: int, command: list[str]) -> int:
    h = _existing(n)
    if hosts.pid_of(h) is None:
        raise LabError(f"{h.name} is not running (python -m cloudlab status)")
    args = ["ssh", *hosts.SSH_OPTS, "-i", str(hosts.KEY), f"root@{h.address}", *command]
    if not command:
        args.insert(1, "-t")
    os.execvp("ssh", args)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cloudlab",
                                description="Real systemd hosts on this machine, for Ansible.")
    sub = p.add_subparsers(dest="command", required=True)
    u = sub.add_parser("up", help="bring up the lab's hosts (idempotent)")
    u.add_argument("--hosts", type=int, default=3, help="node hosts (default 3)")
    u.add_argument("--client-hosts", type=int, default=0, metavar="N",
                   help="N more hosts, after the nodes, listed as lab_clients in the inventory "
                        "(for a client-only machine)")
    u.add_argument("--image", choices=["base", "bench"], default="base",
                   help="bench: also nginx and HAProxy, for bench/compare.py")
    sub.add_parser("down", help="stop and remove everything up started")
    sub.add_parser("status", help="the hosts and their state (exit 3 if not all up)")
    st = sub.add_parser("stop", help="shut host N down, keeping its disk (a failure by hand)")
    st.add_argument("n", type=int)
    st.add_argument("--power-cut", action="store_true",
                    help="pull the plug instead: no shutdown, and no answer on the network")
    sub.add_parser("start", help="boot host N again after stop").add_argument("n", type=int)
    s = sub.add_parser("ssh", help="ssh into host N")
    s.add_argument("n", type=int)
    s.add_argument("cmd", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    try:
        if args.command == "up":
            up(args.hosts, args.image, args.client_hosts)
        elif args.command == "down":
            down()
        elif args.command == "status":
            return status()
        elif args.command == "stop":
            stop_host(args.n, args.power_cut)
        elif args.command == "start":
            start_host(args.n)
        elif args.command == "ssh":
            return ssh(args.n, args.cmd)
    except (LabError, ValueError) as exc:
        print(f"cloudlab: error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, TimeoutError) as exc:
        print(f"cloudlab: {exc}", file=sys.stderr)
        return 1
    return 0
