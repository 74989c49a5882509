"""Periodic progress lines for the long data stages (log files show them; tqdm bars would not)."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("cxrmim.progress")


class Progress:
    """Counts steps and logs 'what: done/total (pct, rate, eta)' every `every_s` seconds and at the end."""

    def __init__(self, what: str, total: int, every_s: float = 10.0) -> None:
        self.what, self.total, self.every_s = what, max(int(total), 0), every_s
        self.done = 0
        self.start = self.last = time.monotonic()

    def step(self, n: int = 1) -> None:
        """Record n more steps; log when the interval has passed or the work is complete."""
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            percent = 100.0 * self.done / self.total if self.total else 100.0
            log.info("%s: %d/%d (%.0f%%, %.1f/s, eta %.0f s)", self.what, self.done, self.total, percent, rate, eta)
