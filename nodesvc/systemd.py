"""sd_notify: tell systemd we are ready, what we are doing, and that we are alive.

Outside systemd (no NOTIFY_SOCKET) every call is a silent no-op.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # abstract namespace socket
            address = "\0" + address[1:]
        self._address = address
        watchdog = env.get("WATCHDOG_USEC", "")
        self.watchdog_interval = int(watchdog) / 2e6 if watchdog.isdigit() else None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, **fields: str) -> bool:
        """Send KEY=value lines, e.g. notify(READY="1", STATUS="leader")."""
        if not self._address:
            return False
        payload = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, self._address)
        except OSError:
            return False
        return True
