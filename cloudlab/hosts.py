"""Lab hosts: a root filesystem over the cached image, a systemd-nspawn container booted
with systemd, started detached, and stopped by the PID we saved."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from cloudlab.plan import STATE_DIR, HostPlan

KEY = STATE_DIR / "id_ed25519"
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=2", "-o", "BatchMode=yes"]


def ensure_key() -> Path:
    if not KEY.exists():
        KEY.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cloud-p2p-lab",
                        "-f", str(KEY)], check=True)
    return KEY


def pid_of(host: HostPlan) -> int | None:
    """The PID of the nspawn we started for this host, if it is still that process."""
    try:
        pid = int(host.pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"systemd-nspawn" in cmdline and str(host.rootfs).encode() in cmdline \
        else None


def is_mounted(path: Path) -> bool:
    return any(line.split()[1] == str(path)
               for line in Path("/proc/self/mounts").read_text().splitlines())


def make_rootfs(host: HostPlan, image: Path) -> None:
    """A fresh root: an overlay over the image (instant), else a copy."""
    remove_rootfs(host)
    upper, work = host.dir / "upper", host.dir / "work"
    for d in (upper, work, host.rootfs):
        d.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                         f"lowerdir={image},upperdir={upper},workdir={work}", str(host.rootfs)],
                        capture_output=True).returncode == 0
    if not ok:
        subprocess.run(["cp", "-a", "--reflink=auto", f"{image}/.", str(host.rootfs)], check=True)
    root = host.rootfs
    (root / "etc" / "hostname").write_text(host.name + "\n")
    (root / "etc" / "hosts").write_text(f"127.0.0.1 localhost\n{host.address} {host.name}\n")
    ssh_dir = root / "root" / ".ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(KEY.with_suffix(".pub").read_text())
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    # Host keys of its own, not the image's: every host is a different machine.
    subprocess.run(["ssh-keygen", "-A", "-f", str(root)], check=True, capture_output=True)


def remove_rootfs(host: HostPlan) -> None:
    if is_mounted(host.rootfs):
        subprocess.run(["umount", str(host.rootfs)], check=False)
        if is_mounted(host.rootfs):
            subprocess.run(["umount", "-l", str(host.rootfs)], check=True)
    shutil.rmtree(host.dir, ignore_errors=True)


def start(host: HostPlan) -> int:
    """Boot the container detached (its own session), output to its log; save its PID."""
    host.dir.mkdir(parents=True, exist_ok=True)
    with host.log_file.open("ab") as log:
        proc = subprocess.Popen(
            ["systemd-nspawn", "-D", str(host.rootfs), "--boot", "--register=no",
             "--keep-unit", f"--machine={host.name}",
             f"--network-namespace-path=/run/netns/{host.netns}",
             "--capability=CAP_NET_ADMIN,CAP_NET_RAW", "--console=read-only"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    host.pid_file.write_text(str(proc.pid))
    return proc.pid


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def stop(host: HostPlan, timeout: float = 20.0) -> None:
    """A clean shutdown (nspawn turns SIGTERM into a poweroff), then SIGKILL if it hangs."""
    pid = pid_of(host)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout):
        power_off(host)


def power_off(host: HostPlan) -> None:
    """Pull the plug: kill the container's init (its whole PID namespace dies) and nspawn."""
    pid = pid_of(host)
    if pid is None:
        return
    for child in _children(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, 10)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
            if waited == pid:
                return True
        except ChildProcessError:
            pass
        if not Path(f"/proc/{pid}").exists():
            return True
        state = Path(f"/proc/{pid}/stat").read_text().split()[2] \
            if Path(f"/proc/{pid}/stat").exists() else "X"
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def ssh(host: HostPlan, command: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", *SSH_OPTS, "-i", str(KEY), f"root@{host.address}", command],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def system_state(host: HostPlan) -> str:
    """systemd's state inside the host as seen over SSH, or why it cannot be read."""
    try:
        r = ssh(host, "systemctl is-system-running", timeout=5)
    except subprocess.TimeoutExpired:
        return "ssh-timeout"
    state = r.stdout.strip()
    return state if state else f"ssh-failed({r.returncode})"


class ContainerExited(RuntimeError):
    """The container's nspawn ended while we waited for it to boot."""


def _exit_note(host: HostPlan) -> str:
    """nspawn's exit status, if this process started it (and so can reap it)."""
    try:
        pid = int(host.pid_file.read_text())
        waited, status = os.waitpid(pid, os.WNOHANG)
    except (OSError, ValueError):
        return ""
    return f" (systemd-nspawn exit status {os.waitstatus_to_exitcode(status)})" \
        if waited == pid else ""


def wait_ready(host: HostPlan, timeout: float = 90.0) -> str:
    """Wait for SSH to work and systemd to be up (`degraded` is normal in a container)."""
    deadline = time.monotonic() + timeout
    state = "unknown"
    while time.monotonic() < deadline:
        if pid_of(host) is None:
            raise ContainerExited(f"{host.name}: the container exited{_exit_note(host)}; "
                                  f"see {host.log_file}")
        state = system_state(host)
        if state in ("running", "degraded"):
            return state
        time.sleep(0.5)
    raise TimeoutError(f"{host.name}: not ready after {timeout:.0f}s (last state: {state}); "
                       f"see {host.log_file}")
