"""The `report` sink: one self-contained HTML page, read as a browser reads it.

A run over two mock shops (faults and a rate limit on, so that every section
has something to show) writes report.html beside summary.json. The page is
checked against the run's own outputs: a price chart per category with one
point per window that holds products (summary.json's windows), a bar per
category, a row per source, a request timeline per endpoint with its rate
limit; no script, no external resource. Then Debian's chromium renders it,
with JavaScript on and off: no console message, the same charts and points
in the DOM it builds, and the same screenshot both ways, kept as a test
artifact (test-artifacts/report.png).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.browser import render
from tests.mock_servers import ENV

ROOT = Path(__file__).parents[3]
ARTIFACTS = ROOT / "test-artifacts"


class _Charts(HTMLParser):
    """What a page holds: charts by kind and key, their data points, and any
    script or external reference."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: Counter[str] = Counter()
        self.points: dict[str, int] = {}  # figure key -> data points in its chart
        self.limits, self.rows, self.scripts = 0, 0, 0
        self.references: list[str] = []
        self._key: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self.scripts += 1
        for name in ("src", "href"):
            if a.get(name):
                self.references.append(f"{tag} {name}={a[name]}")
        if tag == "figure":
            self._key = a.get("data-key")
        if tag == "svg":
            self.charts[a.get("data-chart") or "?"] += 1
            if self._key is not None:
                self.points[self._key] = 0
        if tag in ("circle", "rect") and "point" in (a.get("class") or "").split() and self._key is not None:
            self.points[self._key] += 1
        if tag == "line" and a.get("class") == "limit":
            self.limits += 1
        if tag == "tr":
            self.rows += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._key = None


def _read(html: str) -> _Charts:
    charts = _Charts()
    charts.feed(html)
    return charts


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    shop = {"latency": "1ms..10ms", "error_rate": 0.05, "rate_limit": "20/s", "page_size": 20}
    fetch = {"fetch": {"retry": {"retries": 3, "backoff": "50ms"}}}
    graph = {
        "version": 1,
        "run": {"deadline": "60s"},
        "mocks": {"a": {"style": "dummyjson", "products": 300, **shop}, "b": {"style": "platzi", "products": 200, **shop}},
        "nodes": {
            "a": {"pipe": [{"paginate": {"url": "${mocks.a.url}/products", "style": "skip_limit"}},
                           {"rate_limit": {"rate": "15/s"}}, fetch, {"parse": {"schema": "dummyjson"}},
                           {"normalize": {"preset": "dummyjson"}}]},
            "b": {"pipe": [{"paginate": {"url": "${mocks.b.url}/api/v1/products", "style": "offset"}},
                           {"rate_limit": {"rate": "15/s"}}, fetch, {"parse": {"schema": "platzi"}},
                           {"normalize": {"preset": "platzi"}}]},
            "products": {"from": ["a", "b"], "pipe": ["merge", {"dedupe": {"key": "id"}}, {"window": {
                "name": "by_category", "time": "timestamp", "every": "28d", "by": "category", "lateness": "365d"}}]},
            "summary": {"from": ["products", "products.windows", "*.errors", "*.dead_letters"],
                        "pipe": [{"summary_json": {"path": "summary.json"}}]},
            "page": {"from": ["products", "products.windows", "*.errors", "*.dead_letters"],
                     "pipe": [{"report": {"path": "report.html"}}]},
        },
    }  # fmt: skip
    (tmp / "graph.yaml").write_text(yaml.safe_dump(graph))
    done = subprocess.run([sys.executable, "-m", "flow", "run", str(tmp / "graph.yaml"), "--out", str(tmp / "out"),
                           "-q"], env=ENV, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return tmp / "out"


def _expected(out: Path) -> dict[str, Any]:
    summary = json.loads((out / "summary.json").read_text())
    run = json.loads((out / "run.json").read_text())
    windows = summary["metrics"]["windows"]
    return {
        "points": Counter(w["key"] for w in windows if w["count"]),
        "categories": summary["metrics"]["category_distribution"],
        "sources": sorted(summary["per_source"]),
        "requests": run["ledger"],
    }


def _check(charts: _Charts, expected: dict[str, Any]) -> None:
    categories, sources = expected["categories"], expected["sources"]
    assert charts.scripts == 0 and charts.references == []
    assert charts.charts["line"] == len(expected["points"])  # a price chart per category
    for key, count in expected["points"].items():
        assert charts.points[key] == count, key  # a point per window that holds products
    assert charts.charts["bar"] == 3  # categories, errors, dead letters
    assert charts.charts["timeline"] == len(sources) and charts.limits == len(sources)
    assert charts.rows == 1 + len(sources)  # the header and a row per source
    assert all(charts.points[source] > 0 for source in sources)  # seconds with requests
    assert len(categories) > 5


def test_the_page_holds_every_chart_with_its_data_and_nothing_external(run: Path) -> None:
    html = (run / "report.html").read_text()
    assert "url(" not in html and "<script" not in html.lower()
    _check(_read(html), _expected(run))
    points = re.findall(r'class="point"[^>]*data-x="(\d+)" data-y="([\d.]+)"', html)
    assert points  # the timeline's bars: requests per second never above the limit of 15
    timeline = html[html.index("id='requests'") :]
    assert all(int(y) <= 15 for _, y in re.findall(r'class="point"[^>]*data-x="(\d+)" data-y="(\d+)"', timeline))


def test_a_real_browser_renders_it_the_same_with_javascript_on_and_off_without_a_console_message(run: Path) -> None:
    expected = _expected(run)
    shots = {}
    for scripts in (True, False):
        shots[scripts] = ARTIFACTS / f"report{'' if scripts else '-no-javascript'}.png"
        rendered = render(run / "report.html", scripts=scripts, screenshot=shots[scripts])
        assert rendered.console == []
        _check(_read(rendered.dom), expected)
    on = shots[True].read_bytes()
    assert len(on) > 20_000 and on[:8] == b"\x89PNG\r\n\x1a\n"
    assert on == shots[False].read_bytes()  # with JavaScript off, the very same picture


def test_processing_time_and_count_windows_are_charted_on_their_own_axes(tmp_path: Path) -> None:
    from flow.testing import run_graph
    from stages.records.items import ProductBatch
    from stages.records.product import Product

    def product(n: int) -> Product:
        return Product(id=f"s:{n}", source_id=str(n), title="t", source="s", price=10.0 + n % 7, currency="USD",
                       category=("a", "b")[n % 2], processed_at="2026-01-01T00:00:00.000Z")  # fmt: skip

    batches = [ProductBatch("s", k, [product(n) for n in range(k * 10, k * 10 + 10)]) for k in range(6)]
    run_graph(
        "version: 1\nnodes:\n"
        "  w: {pipe: [{testing_source: {name: in}}, {window: {count: 15, by: category, name: counted}},\n"
        "             {window: {every: 10s, name: timed}}]}\n"
        "  page: {from: [w, w.windows], pipe: [{report: {path: r.html}}]}\n",
        sources={"in": batches}, out_dir=tmp_path,
    )  # fmt: skip
    html = (tmp_path / "r.html").read_text()
    charts = _read(html)
    assert charts.charts["line"] == 3  # counted: a and b; timed: all
    assert "product number (window start)" in html and "seconds since the first window (processing time)" in html
    assert charts.points["a"] == 4 and charts.points["b"] == 4  # product numbers 0, 15, 30, 45 (per key: sparse)
    assert charts.points["all"] == 1  # one 10 s window of processing time


def test_an_endpoint_without_a_rate_limit_has_its_requests_on_the_timeline(tmp_path: Path) -> None:
    graph = {
        "version": 1,
        "mocks": {"shop": {"style": "dummyjson", "products": 100, "rate_limit": "off"}},
        "nodes": {
            "shop": {"pipe": [{"paginate": {"url": "${mocks.shop.url}/products", "style": "skip_limit"}}, "fetch",
                              {"parse": {"schema": "dummyjson"}}, {"normalize": {"preset": "dummyjson"}}]},
            "page": {"from": "shop", "pipe": [{"report": {"path": "r.html"}}]},
        },
    }  # fmt: skip
    (tmp_path / "graph.yaml").write_text(yaml.safe_dump(graph))
    done = subprocess.run([sys.executable, "-m", "flow", "run", str(tmp_path / "graph.yaml"), "--out",
                           str(tmp_path / "out"), "-q"], env=ENV, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    charts = _read((tmp_path / "out" / "r.html").read_text())
    assert charts.charts["timeline"] == 1 and charts.limits == 0  # no limit to draw
    assert charts.points["shop"] >= 1
