"""CPU and I/O priority of the scan workers (``scan-priority``).

``normal`` changes nothing; ``low`` is ``nice 10`` plus the lowest
best-effort I/O priority; ``idle`` is ``nice 19`` plus the idle I/O class
(the disk serves the scan only when nobody else wants it).  The I/O class
is honoured by the BFQ and CFQ schedulers and by NFS servers' own
queues only indirectly; ``max-iops`` is the hard budget.

``ctypes`` (for ioprio_set(2), which the os module lacks) is imported
only for ``low`` and ``idle``: every worker runs ``apply``, and most of
them at ``normal``.
"""

from __future__ import annotations

import os


_NICE = {"normal": 0, "low": 10, "idle": 19}
#: The ``scan-priority`` values.
PRIORITIES = tuple(_NICE)
# ioprio_set(2): (class << 13) | data; best-effort = 2, idle = 3.
_IOPRIO = {"normal": None, "low": (2 << 13) | 7, "idle": 3 << 13}
_IOPRIO_WHO_PROCESS = 1
_SYSCALL = {"x86_64": 251, "aarch64": 30, "i686": 289, "armv7l": 314}


def apply(priority: str) -> list[str]:
    """Lower this process's priority; return what could not be done."""
    problems = []
    if _NICE[priority]:
        try:
            os.nice(_NICE[priority])
        except OSError as e:
            problems.append(f"nice: {e.strerror}")
    value = _IOPRIO[priority]
    if value is not None:
        problems += _set_ioprio(value)
    return problems


def _set_ioprio(value: int) -> list[str]:
    machine = os.uname().machine
    nr = _SYSCALL.get(machine)
    if nr is None:
        return [f"ioprio_set: unknown on {machine}"]
    import ctypes  # noqa: PLC0415 - 0.3 MiB, only for a lowered priority

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(nr, _IOPRIO_WHO_PROCESS, 0, value) != 0:
        return [f"ioprio_set: {os.strerror(ctypes.get_errno())}"]
    return []
