"""Prometheus text-format scraping: metric names, and histogram deltas between two scrapes.

A load run scrapes /metrics before and after; the difference of each histogram's cumulative
buckets is the distribution of what happened during the run alone (batch sizes, queue depth, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

LabelKey = tuple[tuple[str, str], ...]

# The series each metric type exposes (prometheus_client's parser strips these from family names).
_SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "gauge": ("",),
}


@dataclass
class Histogram:
    """One histogram series: cumulative bucket counts by upper bound, plus sum and count."""

    buckets: dict[float, float] = field(default_factory=dict)
    sum: float = 0.0
    count: float = 0.0

    def minus(self, before: Histogram | None) -> Histogram:
        if before is None:
            return Histogram(dict(self.buckets), self.sum, self.count)
        return Histogram(
            {le: c - before.buckets.get(le, 0.0) for le, c in self.buckets.items()},
            self.sum - before.sum,
            self.count - before.count,
        )

    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile q (as Prometheus' histogram_quantile, without interpolation)."""
        if self.count <= 0:
            return math.nan
        target = q * self.count
        for le in sorted(self.buckets):
            if self.buckets[le] >= target:
                return le
        return math.inf

    def non_cumulative(self) -> list[tuple[float, float]]:
        """(upper bound, count in this bucket) pairs, lowest bound first."""
        out: list[tuple[float, float]] = []
        previous = 0.0
        for le in sorted(self.buckets):
            out.append((le, self.buckets[le] - previous))
            previous = self.buckets[le]
        return out


@dataclass
class Scrape:
    """Parsed /metrics: histograms and plain samples (counters, gauges) by name and labels."""

    histograms: dict[str, dict[LabelKey, Histogram]] = field(default_factory=dict)
    samples: dict[str, dict[LabelKey, float]] = field(default_factory=dict)
    # Every series name the target exports, incl. _bucket/_sum/_count/_total; a labelled metric with
    # no sample yet still counts (it is declared by its # TYPE line and appears once used).
    names: set[str] = field(default_factory=set)

    def histogram(self, name: str) -> Histogram | None:
        """All series of a histogram merged (summed over label values)."""
        series = self.histograms.get(name)
        if not series:
            return None
        merged = Histogram()
        for h in series.values():
            for le, c in h.buckets.items():
                merged.buckets[le] = merged.buckets.get(le, 0.0) + c
            merged.sum += h.sum
            merged.count += h.count
        return merged

    def total(self, name: str) -> dict[LabelKey, float]:
        return self.samples.get(name, {})


def parse_metrics(text: str) -> Scrape:
    scrape = Scrape()
    for family in text_string_to_metric_families(text):
        scrape.names.update(family.name + suffix for suffix in _SERIES_SUFFIXES.get(family.type, ("",)))
        for sample in family.samples:
            scrape.names.add(sample.name)
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            key: LabelKey = tuple(sorted(labels.items()))
            if family.type == "histogram":
                h = scrape.histograms.setdefault(family.name, {}).setdefault(key, Histogram())
                if sample.name.endswith("_bucket"):
                    h.buckets[float(sample.labels["le"])] = sample.value
                elif sample.name.endswith("_sum"):
                    h.sum = sample.value
                elif sample.name.endswith("_count"):
                    h.count = sample.value
            else:
                scrape.samples.setdefault(sample.name, {})[key] = sample.value
    return scrape


def histogram_delta(before: Scrape, after: Scrape, name: str) -> Histogram | None:
    after_h = after.histogram(name)
    if after_h is None:
        return None
    return after_h.minus(before.histogram(name))


def counter_delta(before: Scrape, after: Scrape, name: str) -> dict[LabelKey, float]:
    old = before.total(name)
    return {key: value - old.get(key, 0.0) for key, value in after.total(name).items()}
