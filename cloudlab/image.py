"""The Debian image every lab host boots: built once with mmdebstrap, then cached."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

from cloudlab.plan import CACHE_DIR

SUITE = "bookworm"
PACKAGES = ["systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "python3-venv",
            "ufw", "iproute2", "procps"]
# The benchmark peer (issue 5): nginx (WebDAV PUT) behind HAProxy, on the same hosts.
BENCH_PACKAGES = ["nginx", "haproxy"]
SOURCES = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]


def cache_key() -> str:
    text = " ".join([SUITE, *PACKAGES, "v2"])  # v2: built by mmdebstrap
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def image_dir(flavour: str = "base") -> Path:
    if flavour == "bench":
        extra = hashlib.sha256(" ".join(BENCH_PACKAGES).encode()).hexdigest()[:6]
        return CACHE_DIR / f"{SUITE}-{cache_key()}-bench-{extra}"
    return CACHE_DIR / f"{SUITE}-{cache_key()}"


def mirror_from_sources(texts: list[str]) -> str | None:
    """The Debian mirror this machine's apt uses (one-line or deb822 format)."""
    for text in texts:
        for line in text.splitlines():
            m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m and m.group(2).startswith(SUITE) and "security" not in m.group(1):
                return m.group(1)
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.MULTILINE))
            suites = fields.get("Suites", "").split()
            if "deb" in fields.get("Types", "").split() and SUITE in suites \
                    and fields.get("Enabled", "yes") != "no":
                return fields.get("URIs", "").split()[0]
    return None


def _read_sources() -> list[str]:
    out = []
    for path in SOURCES:
        if path.is_file() and (path.suffix in (".list", ".sources") or path.name == "sources.list"):
            out.append(path.read_text(errors="replace"))
    return out


def ensure_image(log: Path, flavour: str = "base") -> Path:
    """The cached image, built first if missing (into a temporary dir, renamed when done, so
    an interrupted build never leaves a half image in the cache). The "bench" flavour is the
    base image plus the benchmark peer's packages."""
    if flavour == "bench":
        return _ensure_bench_image(ensure_image(log), log)
    final = image_dir()
    if (final / "etc" / "os-release").exists():
        return final
    mirror = mirror_from_sources(_read_sources())
    if mirror is None:
        raise RuntimeError("no Debian bookworm source found in /etc/apt/sources.list(.d)")
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        # mmdebstrap, not debootstrap: it installs through apt in one pass (45 s here, against
        # 85 s), the same minbase system.
        subprocess.run(["mmdebstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                        SUITE, str(tmp), mirror], check=True, stdout=out, stderr=out)
    _prepare(tmp)
    tmp.rename(final)
    return final


def _prepare(root: Path) -> None:
    """Make the image a host Ansible can manage: root logs in with a key, each host gets its
    own SSH host keys at up, and nothing waits for hardware a container does not have."""
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    conf = root / "etc" / "ssh" / "sshd_config.d" / "lab.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                    "UseDNS no\n")
    (root / "etc" / "machine-id").write_text("")
    wants = root / "etc" / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "ssh.service"
    if not link.is_symlink():  # (exists() would follow the link on this machine)
        link.symlink_to("/lib/systemd/system/ssh.service")
    for unit in ("systemd-networkd-wait-online.service", "apt-daily.timer",
                 "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer"):
        mask = root / "etc" / "systemd" / "system" / unit
        mask.unlink(missing_ok=True)
        mask.symlink_to("/dev/null")


def _ensure_bench_image(base: Path, log: Path) -> Path:
    final = image_dir("bench")
    if (final / "etc" / "os-release").exists():
        return final
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["cp", "-a", "--reflink=auto", f"{base}/.", str(tmp)], check=True)
    shutil.copy("/etc/resolv.conf", tmp / "etc" / "resolv.conf")
    no_start = tmp / "usr" / "sbin" / "policy-rc.d"  # install, but start nothing in a chroot
    no_start.write_text("#!/bin/sh\nexit 101\n")
    no_start.chmod(0o755)
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    with log.open("ab") as out:
        for cmd in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                     *BENCH_PACKAGES]):
            subprocess.run(["chroot", str(tmp), *cmd], check=True, stdout=out, stderr=out,
                           env=env)
    no_start.unlink()
    # The site is an absolute symlink: remove it, never write through it (it would point
    # into this machine's own /etc). The bench configures its own site per host.
    (tmp / "etc" / "nginx" / "sites-enabled" / "default").unlink(missing_ok=True)
    tmp.rename(final)
    return final
