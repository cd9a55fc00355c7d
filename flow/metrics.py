"""flow's hot-path metrics: counters and histograms kept in plain Python
and handed to the OpenTelemetry exporter as regular OTLP data points.

Why not the SDK's synchronous instruments: `Histogram.record` costs about
9 µs (attribute set hashing, view matching, locks), and flow records several
per page (stage durations, HTTP attempts, rate-limit waits). Here a series
is bound once per attribute set and `record` appends to a list, counted
into the buckets in C now and then (HistogramSeries). `LocalMetrics.data()`
turns the series into SDK `Metric`s (cumulative temporality, start = the
run start) and
`WithLocalMetrics` adds them to every export of the SDK's periodic reader,
so they travel with the SDK's own (observable) metrics in one OTLP request.

Concurrency: series are written on the event loop and read by the reader's
export thread: a counter is one integer; a histogram series: see
HistogramSeries.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import operator
import time
from bisect import bisect_right
from typing import Any

# Explicit bucket bounds in seconds (1 ms .. 60 s): stage turns, HTTP attempts
# and rate-limit waits all fall in this range.
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


FOLD_AT = 1024  # values a histogram series holds before it counts them into its buckets

# (count, sum, min, max, bucket counts) of the values counted so far
Folded = tuple[int, float, float, float, tuple[int, ...]]


class HistogramSeries:
    """`record` appends the value to a list (one C call); every FOLD_AT
    values the list is counted into the buckets in C (a sort and a bisect
    per bound), not value by value in Python. An export counts a copy of
    the values still pending into a copy of the buckets. NaN is not counted.

    Concurrency: `state` (folded, pending) is replaced whole by the event
    loop, in one assignment, when it folds; the export thread reads it once
    and copies the pending list (each one step under the GIL), so it always
    sees a consistent pair."""

    __slots__ = ("bounds", "fold_at", "state")

    def __init__(self, bounds: tuple[float, ...], fold_at: int | None = None) -> None:
        self.bounds = bounds
        self.fold_at = fold_at or FOLD_AT
        empty: Folded = (0, 0.0, float("inf"), float("-inf"), (0,) * (len(bounds) + 1))
        self.state: tuple[Folded, list[float]] = (empty, [])

    def record(self, value: float) -> None:
        pending = self.state[1]
        pending.append(value)
        if len(pending) >= self.fold_at:
            self.state = (fold(self.state[0], pending, self.bounds), [])

    def snapshot(self) -> Folded:
        """(count, sum, min, max, bucket counts) of every value recorded."""
        folded, pending = self.state
        return fold(folded, list(pending), self.bounds)


def fold(folded: Folded, values: list[float], bounds: tuple[float, ...]) -> Folded:
    """`folded` with `values` counted in. OTLP buckets are (previous bound,
    bound]: a bound's cumulative count is the values <= it (bisect_right)."""
    if any(map(math.isnan, values)):  # NaN would unorder the sort
        values = [v for v in values if not math.isnan(v)]
    if not values:
        return folded
    values = sorted(values)
    count, total, low, high, buckets = folded
    cumulative = [*map(functools.partial(bisect_right, values), bounds), len(values)]
    added = [cumulative[0], *(b - a for a, b in itertools.pairwise(cumulative))]
    return (
        count + len(values),
        total + sum(values),
        min(low, values[0]),
        max(high, values[-1]),
        tuple(map(operator.add, buckets, added)),
    )


class CounterSeries:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def add(self, n: int = 1) -> None:
        self.value += n


class _Instrument:
    def __init__(self, name: str, unit: str, description: str) -> None:
        self.name, self.unit, self.description = name, unit, description
        self.series: dict[tuple[tuple[str, Any], ...], Any] = {}

    def _series(self, attributes: dict[str, Any]) -> Any:
        key = tuple(sorted(attributes.items()))
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = self._new()
        return series

    def _new(self) -> Any:
        raise NotImplementedError


class LocalHistogram(_Instrument):
    def __init__(self, name: str, unit: str, description: str, bounds: tuple[float, ...] = SECONDS) -> None:
        super().__init__(name, unit, description)
        self.bounds = bounds

    def _new(self) -> HistogramSeries:
        return HistogramSeries(self.bounds)

    def bind(self, attributes: dict[str, Any]) -> HistogramSeries:
        """The series of one attribute set: `record(value)` on it is the fast path."""
        return self._series(attributes)

    def record(self, value: float, attributes: dict[str, Any]) -> None:
        self._series(attributes).record(value)


class LocalCounter(_Instrument):
    def _new(self) -> CounterSeries:
        return CounterSeries()

    def bind(self, attributes: dict[str, Any]) -> CounterSeries:
        return self._series(attributes)

    def add(self, n: int, attributes: dict[str, Any]) -> None:
        self._series(attributes).add(n)


class LocalMetrics:
    """The run's local instruments, by name."""

    def __init__(self) -> None:
        self.instruments: dict[str, _Instrument] = {}
        self.start_ns = time.time_ns()

    def _get(self, kind: type[Any], name: str, unit: str, description: str) -> Any:
        found = self.instruments.get(name)
        if found is None:
            found = self.instruments[name] = kind(name, unit, description)
        if not isinstance(found, kind):
            raise TypeError(f"metric {name} is a {type(found).__name__}, not a {kind.__name__}")
        return found

    def histogram(self, name: str, unit: str = "s", description: str = "") -> LocalHistogram:
        return self._get(LocalHistogram, name, unit, description)  # type: ignore[no-any-return]

    def counter(self, name: str, unit: str = "1", description: str = "") -> LocalCounter:
        return self._get(LocalCounter, name, unit, description)  # type: ignore[no-any-return]

    def data(self) -> list[Any]:
        """The instruments as SDK `Metric`s (cumulative), for an exporter."""
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            Histogram,
            HistogramDataPoint,
            Metric,
            NumberDataPoint,
            Sum,
        )

        now, start, cumulative = time.time_ns(), self.start_ns, AggregationTemporality.CUMULATIVE
        metrics = []
        for instrument in list(self.instruments.values()):
            series = list(instrument.series.items())
            if not series:
                continue
            if isinstance(instrument, LocalHistogram):
                snapshots = [(key, s.bounds, s.snapshot()) for key, s in series]
                points = [
                    HistogramDataPoint(dict(key), start, now, n, total, list(counts), list(bounds), low, high)
                    for key, bounds, (n, total, low, high, counts) in snapshots
                    if n
                ]
                data: Any = Histogram(points, cumulative)
            else:
                data = Sum(
                    [NumberDataPoint(dict(k), start, now, s.value) for k, s in series], cumulative, True
                )
            metrics.append(Metric(instrument.name, instrument.description, instrument.unit, data))
        return metrics


def with_local_metrics(exporter: Any, local: LocalMetrics, resource: Any, scope: Any) -> Any:
    """`exporter` (any SDK MetricExporter) with `local`'s metrics added to
    every export."""
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        MetricsData,
        ResourceMetrics,
        ScopeMetrics,
    )

    class WithLocalMetrics(MetricExporter):
        def __init__(self) -> None:
            super().__init__(exporter._preferred_temporality, exporter._preferred_aggregation)
            self.warned = False  # one warning per run

        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
            extra = local.data()
            if extra:
                ours = ScopeMetrics(scope, extra, "")
                resources = list(metrics_data.resource_metrics) if metrics_data is not None else []
                if resources:
                    first = resources[0]
                    resources[0] = ResourceMetrics(
                        first.resource, [*first.scope_metrics, ours], first.schema_url
                    )
                else:
                    resources = [ResourceMetrics(resource, [ours], "")]
                metrics_data = MetricsData(resources)
            if metrics_data is None:
                return MetricExportResult.SUCCESS
            result = exporter.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
            if result is MetricExportResult.FAILURE and not self.warned:
                self.warned = True
                logging.getLogger("flow.telemetry").warning(
                    "telemetry: metrics could not be sent (%s)", getattr(exporter, "_endpoint", "exporter")
                )
            return result

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return exporter.force_flush(timeout_millis)

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            exporter.shutdown(timeout_millis=timeout_millis, **kwargs)

    return WithLocalMetrics()
