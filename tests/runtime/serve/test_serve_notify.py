"""systemd's notify protocol, written by hand: datagrams to $NOTIFY_SOCKET (a path or an abstract "@" name),
watchdog pings throttled to half of WATCHDOG_USEC, and the shipped unit file's settings."""

from __future__ import annotations

import configparser
import os
import socket
import tempfile
import time
from pathlib import Path

import pytest

from hbci.runtime.errors import ServiceError
from hbci.runtime.serve.notify import Notifier

ROOT = Path(__file__).resolve().parents[3]


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + address[1:] if address.startswith("@") else address)
    sock.settimeout(2)
    return sock


@pytest.mark.parametrize("abstract", [False, True])
def test_ready_and_watchdog(abstract):
    folder = tempfile.mkdtemp(prefix="hbci-n", dir="/tmp")  # unix socket paths are limited to 108 bytes
    address = f"@hbci-test-{os.getpid()}" if abstract else f"{folder}/notify"
    with _receiver(address) as sock:
        notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"})
        assert notifier.enabled and notifier.watchdog_interval == pytest.approx(0.1)
        notifier.ready("2 sources")
        assert sock.recv(4096) == b"READY=1\nSTATUS=2 sources"
        for _ in range(50):  # many calls, one ping per half interval
            notifier.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(4096)
        time.sleep(0.12)
        notifier.watchdog()
        sock.settimeout(2)
        assert sock.recv(4096) == b"WATCHDOG=1"
        notifier.stopping()
        assert sock.recv(4096) == b"STOPPING=1"


def test_without_systemd_nothing_is_sent_and_a_dead_socket_is_an_error(tmp_path):
    quiet = Notifier({})
    assert not quiet.enabled and quiet.watchdog_interval is None
    quiet.ready()
    quiet.watchdog()
    # A watchdog meant for another process is not ours to feed.
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    with pytest.raises(ServiceError, match="systemd notification"):
        Notifier({"NOTIFY_SOCKET": str(tmp_path / "absent")}).ready()


def test_unit_file():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read_string((ROOT / "deploy" / "hbci-serve.service").read_text())
    service = unit["Service"]
    assert service["Type"] == "notify" and service["Restart"] == "on-failure"
    assert "hbci-serve --config" in service["ExecStart"] and "-HUP" in service["ExecReload"]
    from hbci.runtime.serve.service import STALL_S

    assert int(service["WatchdogSec"]) > STALL_S  # a stalled source starves the watchdog only after STALL_S


def test_a_reader_that_falls_behind_never_blocks_the_frame_loop():
    folder = tempfile.mkdtemp(prefix="hbci-n", dir="/tmp")
    with _receiver(f"{folder}/notify"):  # never read
        notifier = Notifier({"NOTIFY_SOCKET": f"{folder}/notify", "WATCHDOG_USEC": "2"})
        began = time.monotonic()
        with pytest.raises(ServiceError):
            for _ in range(10_000):
                notifier.send("WATCHDOG=1")
        for _ in range(100):
            notifier.watchdog()  # dropped pings, no exception, no wait
        assert time.monotonic() - began < 5
