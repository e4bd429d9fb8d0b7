"""A stream's arrivals over time: when its first event went out and the gaps between the events
that followed (for an LLM: time to first token and inter-token latency), kept in fixed buckets so a
stream of any length holds a few dozen integers, and a route's streams add up bucket by bucket.

Pure and cheap: the relay marks each write that carried events (one ``bisect`` and an increment);
percentiles are read from the buckets (the upper bound of the bucket where the rank falls, as
Prometheus' ``histogram_quantile`` would place it at most).
"""

from __future__ import annotations

import bisect
import math
from typing import Final

__all__ = ["GAP_BUCKETS", "Timeline"]

GAP_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Upper bounds (seconds) of the gap buckets; a last one, +Inf, catches the rest."""


class Timeline:
    __slots__ = ("_last", "counts", "gaps", "longest", "total")

    def __init__(self) -> None:
        self.counts: list[int] = []  # made at the first gap: an idle stream holds no buckets
        self.gaps = 0
        self.total = 0.0
        self.longest = 0.0
        self._last: float | None = None

    def mark(self, now: float) -> None:
        """A write with events at ``now`` (a monotonic clock, seconds)."""
        last = self._last
        self._last = now
        if last is None:
            return
        gap = now - last
        if not self.counts:
            self.counts = [0] * (len(GAP_BUCKETS) + 1)
        self.counts[bisect.bisect_left(GAP_BUCKETS, gap)] += 1
        self.gaps += 1
        self.total += gap
        if gap > self.longest:
            self.longest = gap

    def percentile(self, fraction: float) -> float | None:
        """The gap at ``fraction`` (0.5: the median) as its bucket's upper bound, or the longest
        gap when that is shorter; None before two marks."""
        if not self.gaps:
            return None
        rank = max(1, math.ceil(fraction * self.gaps))
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                # A bucket's bound may lie past every gap in it: never past the longest.
                bound = GAP_BUCKETS[index] if index < len(GAP_BUCKETS) else self.longest
                return min(bound, self.longest)
        return self.longest  # not reached: the counts add up to gaps
