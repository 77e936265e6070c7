"""The sd_notify protocol: tell systemd we are ready, alive (watchdog) and how we are doing (status).

A datagram to the socket named in $NOTIFY_SOCKET (set by systemd for Type=notify units); without it,
every call does nothing, so the daemon runs the same outside systemd.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(*fields: str) -> bool:
    """Send ``fields`` ("READY=1", "STATUS=…", "WATCHDOG=1") to systemd; return True when sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto("\n".join(fields).encode(), address)
    except OSError as error:
        log.warning("cannot notify systemd at %s: %s", address, error)
        return False
    return True


def watchdog_interval() -> float | None:
    """Return how often to send WATCHDOG=1 (half of WatchdogSec=), or None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or not usec.isdigit():
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2_000_000
