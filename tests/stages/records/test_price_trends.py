"""Price trends over event time, end to end: `flow run` over a mock shop
whose prices move by a known design (mocks/_catalogue.py: a drift per
category over a year, a seasonal swing, steps), windowed by event time per
category, against the mock's own catalogue and design.

1. Exact: every 28-day window of every category holds exactly the products
   the shop served with an update time in it (count), at their average
   price; computed here from the catalogue itself, product by product.
2. Within tolerance: each category's price change from the first quarter of
   the year to the last, as flow's windows give it (their averages, weighted
   by their counts, over three windows at each end), comes out within
   TOLERANCE of the design's (the mean price factor of the products in those
   windows): sampling noise of the base prices only, about 2% per side at
   60,000 products.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import yaml

from mocks._catalogue import CATEGORIES, WHEN_SECONDS, Catalogue, price_factor
from tests.mock_servers import ENV

PRODUCTS, SEED = 60_000, 3
WINDOW = 28 * 86_400
TOLERANCE = 0.08  # of the design's change; three standard errors at this size are 6-7%


def _start(seconds: int) -> int:
    return seconds // WINDOW * WINDOW


def _truth() -> tuple[dict[tuple[str, int], list[float]], dict[tuple[str, int], list[float]]]:
    """(category, window start) -> the prices served, and the design's factors."""
    catalogue = Catalogue(PRODUCTS, SEED, page_size=100)
    prices, factors = defaultdict(list), defaultdict(list)
    for index in range(PRODUCTS):
        slot = catalogue.slot(index)
        if slot.kind != "valid":  # malformed: dead letters; repeats: duplicates
            continue
        product = catalogue.product(index)
        key = (product.slug, _start(WHEN_SECONDS[product.when]))
        prices[key].append(product.price)
        factors[key].append(price_factor(product.category, product.when))
    return prices, factors


def test_windows_by_category_match_the_catalogue_and_its_trend_the_design(tmp_path: Path) -> None:
    window = {"name": "trends", "time": "timestamp", "every": "28d", "by": "category", "lateness": "365d"}
    graph = {
        "version": 1,
        "run": {"deadline": "120s"},
        "mocks": {"shop": {"style": "dummyjson", "products": PRODUCTS, "seed": SEED, "page_size": 100,
                           "heterogeneity": 0.0, "rate_limit": "off"}},
        "nodes": {
            "shop": {"pipe": [
                {"paginate": {"url": "${mocks.shop.url}/products", "style": "skip_limit", "page_size": 100}},
                {"fetch": {"concurrency": 8}}, {"parse": {"schema": "dummyjson"}},
                {"normalize": {"preset": "dummyjson"}}]},
            "products": {"from": "shop", "pipe": ["merge", {"dedupe": {"key": "id"}}, {"window": window}]},
            "report": {"from": ["products", "products.windows"], "pipe": [{"summary_json": {"path": "s.json"}}]},
        },
    }  # fmt: skip
    (tmp_path / "graph.yaml").write_text(yaml.safe_dump(graph))
    done = subprocess.run([sys.executable, "-m", "flow", "run", str(tmp_path / "graph.yaml"), "--out",
                           str(tmp_path / "out"), "-q"], env=ENV, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr
    windows = json.loads((tmp_path / "out" / "s.json").read_text())["metrics"]["windows"]
    prices, factors = _truth()

    from datetime import datetime

    got = {(w["key"], int(datetime.fromisoformat(w["start"]).timestamp())): w for w in windows if w["count"]}
    assert set(got) == set(prices)
    for key, served in prices.items():
        assert got[key]["count"] == len(served), key
        assert math.isclose(got[key]["price"]["avg"], round(sum(served) / len(served), 2), abs_tol=0.011), key

    changes = []
    for slug, *_ in CATEGORIES:
        starts = sorted(start for category, start in prices if category == slug)[1:-1]  # whole windows
        early, late = starts[:3], starts[-3:]

        def mean(cells: list[int], table: dict[tuple[str, int], list[float]], slug: str = slug) -> float:
            values = [v for start in cells for v in table[(slug, start)]]
            return sum(values) / len(values)

        def run_mean(cells: list[int], slug: str = slug) -> float:  # from the windows flow wrote
            windows = [got[(slug, start)] for start in cells]
            return sum(w["price"]["avg"] * w["count"] for w in windows) / sum(w["count"] for w in windows)

        measured = run_mean(late) / run_mean(early)
        designed = mean(late, factors) / mean(early, factors)
        changes.append((slug, round(measured - 1, 3), round(designed - 1, 3)))
    print("category, measured change, designed change:", changes)
    off = [(slug, m, d) for slug, m, d in changes if abs((1 + m) / (1 + d) - 1) > TOLERANCE]
    assert not off, f"measured vs designed change beyond {TOLERANCE:.0%}: {off} (all: {changes})"
