"""The I/O budget (``max-iops``): a token bucket per worker process."""

from __future__ import annotations

import time

from collections.abc import Callable


class Throttle:
    """A token bucket: operations stay under ``rate`` per second.

    One per worker process (not per unit), so a stream of small units is
    held to the budget too; at most 10 ms of unused budget is saved up,
    and sleeps are at least 10 ms long.
    """

    BURST = 0.01

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.last = clock()
        self.allowance = rate * self.BURST

    def tick(self, n: int = 1) -> None:
        if self.rate <= 0:
            return
        now = self.clock()
        self.allowance = min(
            self.rate * self.BURST,
            self.allowance + (now - self.last) * self.rate,
        ) - n
        self.last = now
        if self.allowance < -self.rate * self.BURST:
            time.sleep(-self.allowance / self.rate)

