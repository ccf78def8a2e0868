"""The jobs' metric helpers, on a stand-in for Flink's metric group (the same two calls the jobs use)."""
from jobs.metrics import Histogram


class _Counter:
    def __init__(self):
        self.value = 0

    def inc(self, n: int = 1):
        self.value += n


class _Group:
    def __init__(self, labels=()):
        self.labels, self.counters = labels, {}

    def counter(self, name: str) -> _Counter:
        return self.counters.setdefault((self.labels, name), _Counter())

    def add_group(self, key: str, value: str) -> "_Group":
        child = _Group((*self.labels, (key, value)))
        child.counters = self.counters
        return child


def test_every_bucket_exists_before_anything_is_observed():
    group = _Group()
    Histogram(group, "model_ms", (5, 10, 25))
    assert {labels for labels, name in group.counters if name == "model_ms"} == {
        (("le", "5"),), (("le", "10"),), (("le", "25"),), (("le", "inf"),)}


def test_buckets_are_cumulative_and_the_sum_keeps_fractions():
    group = _Group()
    histogram = Histogram(group, "model_ms", (5, 10))
    for value in [0.4] * 10 + [7.0]:
        histogram.observe(value)
    value = {(labels, name): c.value for (labels, name), c in group.counters.items()}
    assert value[((("le", "5"),), "model_ms")] == 10 and value[((("le", "10"),), "model_ms")] == 11
    assert value[((("le", "inf"),), "model_ms")] == 11 and value[((), "model_ms_count")] == 11
    assert value[((), "model_ms_sum")] == 11  # 0.4 * 10 + 7 = 11: rounding each value would give 7
