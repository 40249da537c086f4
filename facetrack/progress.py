"""Progress text shared by the pages and the command line: one time-left formatter, one estimate.

Imports nothing heavy.
"""

from __future__ import annotations

import time

# A time-left figure means something only after this many seconds and this many steps.
MIN_SECONDS = 3.0
MIN_STEPS = 2


def format_time_left(seconds: float | None) -> str:
    """``"about 42 s left"``, ``"about 3 min 05 s left"``, ``"about 1 h 02 min left"``; None: still estimating."""
    if seconds is None:
        return "estimating time left"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"about {seconds} s left"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"about {minutes} min {sec:02d} s left"
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes:02d} min left"


class RateEstimate:
    """Time left from the rate seen since the first observation; None until it means something."""

    def __init__(self, now: float | None = None) -> None:
        self.start: float | None = now
        self.start_done = 0

    def update(self, done: int, total: int, now: float | None = None) -> float | None:
        now = time.time() if now is None else now
        if self.start is None:
            self.start, self.start_done = now, done
            return None
        elapsed, steps = now - self.start, done - self.start_done
        if elapsed < MIN_SECONDS or steps < MIN_STEPS:
            return None
        return (total - done) * elapsed / steps
