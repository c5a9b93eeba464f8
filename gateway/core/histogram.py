"""A latency histogram as plain numbers: bucket counts and a sum, read at scrape time.

Pure (no clock, no I/O, no prometheus_client): whoever times something passes the seconds to
:meth:`Histogram.observe` (a ``bisect`` and two additions, no lock: trio runs one task at a
time), and :mod:`gateway.admin.collector` turns the counts into a Prometheus histogram when it
is scraped.  Buckets are upper bounds, inclusive (``le``), as Prometheus defines them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

# Seconds: loopback answers take about a millisecond, a stuck upstream up to read_timeout.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class Histogram:
    """Observations counted into ``bounds`` (ascending) plus one ``+Inf`` bucket."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("bucket bounds must be distinct and ascending")
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> Iterator[tuple[float, int]]:
        """``(upper bound, observations <= it)`` for every bucket, ``inf`` last."""
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            yield bound, total
