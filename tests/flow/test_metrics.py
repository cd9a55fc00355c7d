"""flow.metrics' local instruments export the same data points as the
OpenTelemetry SDK's own instruments fed the same measurements."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

from flow import metrics
from flow.metrics import SECONDS, LocalMetrics, with_local_metrics

values = st.lists(
    st.one_of(st.sampled_from(SECONDS), st.floats(min_value=0, max_value=120, allow_nan=False)), max_size=60
)
attribute_sets = st.sampled_from([{"flow.stage": "parse"}, {"flow.stage": "fetch", "flow.node": "a"}])


def _sdk_points(measurements: list[tuple[float, dict[str, str]]]) -> dict[tuple, object]:
    reader = InMemoryMetricReader()
    view = View(instrument_name="h", aggregation=ExplicitBucketHistogramAggregation(list(SECONDS)))
    provider = MeterProvider(metric_readers=[reader], views=[view])
    histogram = provider.get_meter("t").create_histogram("h")
    for value, attributes in measurements:
        histogram.record(value, attributes)
    data = reader.get_metrics_data()
    provider.shutdown()
    if data is None:
        return {}
    [metric] = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    return {tuple(sorted(p.attributes.items())): p for p in metric.data.data_points}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(values, attribute_sets), max_size=4), st.sampled_from([None, 1, 3, 7]))
def test_histogram_points_equal_the_sdk_ones(groups, fold_at):
    """Also when the values are counted into the buckets every few records
    (`fold_at`; 1024 by default), as a long run does."""
    measurements = [(v, attrs) for vs, attrs in groups for v in vs]
    local = LocalMetrics()
    histogram = local.histogram("h")
    for value, attributes in measurements:
        histogram.bind(attributes).fold_at = fold_at or metrics.FOLD_AT
        histogram.record(value, attributes)
    expected = _sdk_points(measurements)
    ours = {}
    for metric in local.data():
        for point in metric.data.data_points:
            ours[tuple(sorted(point.attributes.items()))] = point
    assert ours.keys() == expected.keys()
    for key, point in ours.items():
        sdk = expected[key]
        assert list(point.bucket_counts) == list(sdk.bucket_counts)
        assert list(point.explicit_bounds) == list(sdk.explicit_bounds)
        assert point.count == sdk.count and point.min == sdk.min and point.max == sdk.max
        assert abs(point.sum - sdk.sum) <= 1e-9 * max(1.0, abs(sdk.sum))


def test_counters_and_bound_series():
    local = LocalMetrics()
    requests = local.counter("flow.http.requests")
    ok = requests.bind({"code": 200})
    for _ in range(3):
        ok.add()
    requests.add(2, {"code": 503})
    requests.add(1, {"code": 200})
    [metric] = local.data()
    assert metric.data.is_monotonic
    assert {p.attributes["code"]: p.value for p in metric.data.data_points} == {200: 4, 503: 2}


def test_the_wrapper_adds_local_metrics_to_every_export():
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    exported: list[MetricsData] = []

    class Keep(MetricExporter):
        def export(self, metrics_data, timeout_millis=10_000, **kwargs):
            exported.append(metrics_data)
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis=10_000):
            return True

        def shutdown(self, timeout_millis=30_000, **kwargs):
            pass

    local = LocalMetrics()
    local.histogram("flow.stage.duration").record(0.02, {"flow.stage": "parse"})
    resource = Resource.create({"service.name": "flow"})
    exporter = with_local_metrics(Keep(), local, resource, InstrumentationScope("flow.engine"))
    exporter.export(MetricsData([]))
    [data] = exported
    [rm] = data.resource_metrics
    assert rm.resource.attributes["service.name"] == "flow"
    [sm] = rm.scope_metrics
    assert sm.scope.name == "flow.engine"
    [point] = sm.metrics[0].data.data_points
    assert point.count == 1 and point.bucket_counts[SECONDS.index(0.025)] == 1
    assert exporter.force_flush() is True  # passed on to the exporter wrapped


def test_nan_is_not_counted_and_leaves_the_other_values_in_place():
    local = LocalMetrics()
    series = local.histogram("h").bind({})
    series.fold_at = 4
    for value in (0.002, float("nan"), 0.3, 0.002, float("nan"), 7.0):
        series.record(value)
    count, total, low, high, buckets = series.snapshot()
    assert (count, low, high) == (4, 0.002, 7.0) and abs(total - 7.304) < 1e-12
    assert buckets[SECONDS.index(0.0025)] == 2 and buckets[SECONDS.index(0.5)] == 1
    assert buckets[SECONDS.index(10.0)] == 1 and sum(buckets) == 4
