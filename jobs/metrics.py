"""Metrics the jobs export (to Prometheus through flink-conf/config.yaml's reporter), as Flink counters only.

PyFlink's Python gauges are called by the reporter from its own HTTP thread, which in thread mode cannot
enter the interpreter: with one registered, every Prometheus scrape ended without a response. So counts
kept in plain Python (the screener's, the Feast clients') are pushed into counters after each batch
(``CountersOf``), labelled counts go to one counter per label value (``CountersByLabel``), and time is a
Prometheus histogram built of counters (``Histogram``: cumulative ``le`` buckets, a sum and a count).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence


class CountersByLabel:
    """One counter per value of a label (``add_group(label, value)``: a Prometheus label), made when first
    used, or at once for the values named in ``known``."""

    def __init__(self, group, label: str, name: str, known: Sequence[str] = ()):
        self._group, self._label, self._name = group, label, name
        self._counters = {}
        for value in known:
            self.inc(value, 0)

    def inc(self, value: str, n: int = 1) -> None:
        if value not in self._counters:
            self._counters[value] = self._group.add_group(self._label, value).counter(self._name)
        self._counters[value].inc(n)


class CountersOf:
    """Counters that follow plain Python counts: ``update`` adds to each what its count gained since."""

    def __init__(self, group, counts: Mapping[str, Callable[[], int]]):
        self._counts = dict(counts)
        self._counters = {name: group.counter(name) for name in counts}
        self._seen = {name: 0 for name in counts}

    def update(self) -> None:
        for name, count in self._counts.items():
            value = count()
            if value > self._seen[name]:
                self._counters[name].inc(value - self._seen[name])
                self._seen[name] = value


class Histogram:
    """``<name>{le}`` cumulative bucket counters, ``<name>_sum`` and ``<name>_count``; values in the unit of
    the bounds (milliseconds here). Flink's reporter writes a label value's "+" as "_", so the last bucket is
    ``le="inf"``: ``histogram_quantile`` needs it as "+Inf", which ``label_replace`` gives (see the dashboard)."""

    def __init__(self, group, name: str, bounds: Sequence[float]):
        self._bounds = sorted(bounds)
        # Every bucket from the start: histogram_quantile over a series with buckets missing is wrong.
        self._buckets = CountersByLabel(group, "le", name, [*(f"{b:g}" for b in self._bounds), "inf"])
        self._sum, self._count = group.counter(f"{name}_sum"), group.counter(f"{name}_count")
        # The sum counter takes whole units: it gets the whole part of the exact running sum, so it never
        # drifts from it by a unit or more (rounding each value would count a run of 0.4 ms batches as 0).
        self._exact_sum, self._counted_sum = 0.0, 0

    def observe(self, value: float) -> None:
        for bound in self._bounds:
            if value <= bound:
                self._buckets.inc(f"{bound:g}")
        self._buckets.inc("inf")
        self._exact_sum += value
        whole = int(self._exact_sum) - self._counted_sum
        if whole:
            self._sum.inc(whole)
            self._counted_sum += whole
        self._count.inc()
