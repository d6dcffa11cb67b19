"""systemd's notify protocol (``Type=notify``, ``WatchdogSec=``).

One datagram per state change to ``$NOTIFY_SOCKET``; no libsystemd.
Without that variable (not under systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import threading

from collections.abc import Callable, Mapping


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``READY=1``); True if there was a socket."""
    env = os.environ if environ is None else environ
    addr = env.get("NOTIFY_SOCKET", "")
    if not addr or addr[0] not in "/@":
        return False
    if addr[0] == "@":  # abstract namespace
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(state.encode())
    except OSError:
        return False  # systemd went away: nothing to tell
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, if the watchdog is on for us."""
    env = os.environ if environ is None else environ
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2e6


def start_watchdog(
    healthy: Callable[[], bool], stop: threading.Event
) -> threading.Thread | None:
    """Ping ``WATCHDOG=1`` while ``healthy()``; stop pinging otherwise."""
    interval = watchdog_interval()
    if interval is None:
        return None

    def ping() -> None:
        while not stop.wait(interval):
            if healthy():
                notify("WATCHDOG=1")

    thread = threading.Thread(target=ping, name="watchdog", daemon=True)
    thread.start()
    return thread
