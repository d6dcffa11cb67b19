"""A scan worker process: ``python -m du_exporter.worker HUNGER_FD [PRIORITY]``.

It reads tasks (a plan and a unit) as length-prefixed pickles on stdin
and writes the messages of each unit the same way on stdout (rows as
they finish, then a final one), one unit at a time, until stdin
closes.  It imports only the scanner, so it stays small.  Only the
parent process, which started it with these pipes, ever talks to it.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys

from typing import IO

from du_exporter.paths import display
from du_exporter.scan import priority
from du_exporter.scan.budget import Throttle
from du_exporter.scan.hunger import MappedHunger
from du_exporter.scan.walker import scan_unit


HEADER = 8


def read_frame(stream: IO[bytes]) -> bytes | None:
    """One length-prefixed frame, or None at end of stream."""
    header = stream.read(HEADER)
    if len(header) < HEADER:
        return None
    size = int.from_bytes(header, "big")
    data = stream.read(size)
    if len(data) < size:
        return None
    return data


def write_frame(stream: IO[bytes], data: bytes) -> None:
    stream.write(len(data).to_bytes(HEADER, "big") + data)
    stream.flush()


def _reason(e: Exception) -> str:
    """An error for the log: a path in it shown as people read paths,
    never as a Python bytes literal."""
    if isinstance(e, OSError) and e.filename is not None:
        where = display(os.fsencode(e.filename))
        return f"{type(e).__name__}: {e.strerror}: '{where}'"
    return f"{type(e).__name__}: {e}"


def main() -> None:
    # Ctrl-C reaches the whole process group: the parent decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        hunger = MappedHunger(int(sys.argv[1]))
    except (IndexError, ValueError, OSError) as e:
        # The parent sees the exit and fails the scan; one line, no traceback.
        sys.stderr.write(f"du-exporter worker: cannot start: {e}\n")
        sys.exit(1)
    if len(sys.argv) > 2:  # noqa: PLR2004 - the optional priority argument
        for problem in priority.apply(sys.argv[2]):
            # The parent forwards stderr to its log; keep scanning.
            sys.stderr.write(f"du-exporter worker: scan-priority: {problem}\n")
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # One budget per process, kept across units while the rate stays.
    throttle = Throttle(0)

    def send(message: object) -> None:
        write_frame(stdout, pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    while (frame := read_frame(stdin)) is not None:
        # A unit, the id of its first row, the row it hangs on.
        plan, unit, base, parent = pickle.loads(frame)  # noqa: S301 - from our parent only
        if throttle.rate != plan.iops:
            throttle = Throttle(plan.iops)
        try:
            try:
                result: object = scan_unit(
                    plan, unit, base, parent, hunger, throttle, send
                )
            except BrokenPipeError:
                raise
            except Exception as e:  # noqa: BLE001 - reported to the parent, which fails the scan
                result = _reason(e)
            send(result)
        except BrokenPipeError:  # the parent is gone (killed): so are we
            # As the Python docs advise: no second error when exit flushes.
            os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
            break


if __name__ == "__main__":
    main()
