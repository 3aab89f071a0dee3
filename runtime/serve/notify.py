"""systemd's notify protocol (sd_notify), written directly: one datagram per state to the unix socket named by
$NOTIFY_SOCKET ("@..." is an abstract socket). No socket set: nothing is sent (not run by systemd)."""

from __future__ import annotations

import os
import socket
import threading
import time

from hbci.runtime.errors import ServiceError

__all__ = ["Notifier"]


class Notifier:
    """READY=1, STOPPING=1, STATUS=..., and WATCHDOG=1 pings at half the interval systemd asks for."""

    def __init__(self, environ=None):
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET") or None
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        mine = not pid or (pid.isdigit() and int(pid) == os.getpid())
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and mine else None
        self._last_ping = 0.0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *states: str) -> None:
        """Send `KEY=VALUE` states in one datagram; ServiceError if the socket refuses it. Never blocks (it is
        called from the frame loop): a full socket queue is an error too."""
        if self.address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.connect(self.address)
                sock.send("\n".join(states).encode())
        except OSError as exc:
            raise ServiceError(f"systemd notification to {self.address!r} failed: {exc}") from None

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> None:
        try:
            self.send("STOPPING=1")
        except ServiceError:
            pass  # stopping anyway

    def watchdog(self) -> None:
        """WATCHDOG=1, at most every half interval (call it as often as you like: from the frame loop)."""
        if self.watchdog_interval is None or self.address is None:
            return
        now = time.monotonic()
        with self._lock:
            if now - self._last_ping < self.watchdog_interval:
                return
            self._last_ping = now
        try:
            self.send("WATCHDOG=1")
        except ServiceError:
            pass  # a missed ping is systemd's to judge
