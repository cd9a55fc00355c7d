"""Every style's pagination walked to the end over loopback HTTP, checked
against the server's ground truth (`/__stats`)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mocks import STYLES, MockServer, ServerSpec

from .walk import Record, walk


async def stats(http: Any, server: MockServer) -> dict[str, Any]:
    async with http.get(server.url + "/__stats") as response:
        assert response.status == 200
        return await response.json()


def check_against_truth(server: MockServer, records: list[Record], truth: dict[str, Any]) -> None:
    """Every valid id once, plus exactly the declared duplicates; every
    malformed slot shows its defect; the server's served-truth agrees."""
    catalogue = truth["catalogue"]
    malformed = {m["index"]: m for m in catalogue["malformed"]}
    duplicates = {d["index"]: d for d in catalogue["duplicates"]}
    assert [index for index, _ in records] == list(range(server.spec.products))
    ids: Counter[Any] = Counter()
    for index, record in records:
        if index in malformed:
            defect = malformed[index]["defect"]
            title_key = "name" if server.spec.style in {"reqres", "cursor"} else "title"
            if defect == "missing_id":
                assert "id" not in record
            elif defect == "missing_title":
                assert title_key not in record
            elif defect == "blank_title":
                assert record[title_key].strip() == ""
            continue
        ids[record["id"]] += 1
    expected_valid = {
        server.style.id_of(i + 1)
        for i in range(server.spec.products)
        if i not in malformed and i not in duplicates
    }
    assert set(ids) == expected_valid
    repeats = Counter(d["id"] for d in duplicates.values())
    assert {k: v for k, v in ids.items() if v > 1} == {k: 1 + n for k, n in repeats.items()}
    assert catalogue["valid"] == len(expected_valid)
    served = truth["served"]
    assert served["valid"] == sorted(expected_valid)
    assert served["malformed"] == catalogue["malformed"]
    assert served["duplicates"] == catalogue["duplicates"]
    assert served["records"] == server.spec.products


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("products,page_size", [(1, 20), (20, 20), (101, 20), (45, 7), (300, 100)])
async def test_walk_to_the_end(http, start_mock, style, products, page_size):
    server = await start_mock(
        style=style, products=products, defect_rate=0.1, duplicate_rate=0.1, heterogeneity=0.5
    )
    records = await walk(http, server, page_size)
    check_against_truth(server, records, (await stats(http, server))["truth"])


@pytest.mark.parametrize("style", STYLES)
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(
    products=st.integers(1, 5000),
    page_size=st.integers(1, 100),
    seed=st.integers(0, 2**32),
)
async def test_any_size_any_page_size_yields_each_valid_id_once(
    http, start_mock, style, products, page_size, seed
):
    # Keep one example's walk bounded (at most ~600 requests) without
    # narrowing either range: small pages get small catalogues.
    products = min(products, page_size * 600)
    server = await start_mock(
        style=style, products=products, seed=seed, max_page_size=100, page_size=min(20, page_size)
    )
    records = await walk(http, server, page_size)
    check_against_truth(server, records, (await stats(http, server))["truth"])


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    style=st.sampled_from(STYLES),
    products=st.integers(1, 5000),
    page_size=st.integers(1, 100),
    seed=st.integers(0, 2**32),
)
def test_page_windows_partition_the_catalogue(style, products, page_size, seed):
    """The same property over the full ranges without HTTP: the style's own
    request parsing and page rendering, page after page, cover every slot
    exactly once (the HTTP walk above is bounded to ~600 pages per example)."""
    server = MockServer(ServerSpec(style=style, products=products, seed=seed, page_size=min(20, page_size)))
    style_ = server.style
    seen: list[int] = []
    params = {
        "dummyjson": lambda n: {"limit": str(page_size), "skip": str(n * page_size)},
        "platzi": lambda n: {"offset": str(n * page_size), "limit": str(page_size)},
        "reqres": lambda n: {"page": str(n + 1), "per_page": str(page_size)},
        "jsonserver": lambda n: {"_page": str(n + 1), "_limit": str(page_size)},
        "cursor": lambda n: {
            "limit": str(page_size),
            **({"cursor": style_.encode(n * page_size)} if n else {}),
        },
    }[style]
    for n in range(-(-products // page_size) + 1):
        page = style_.window(params(n), default=20, maximum=100, total=products)
        seen.extend(p.index for p in server.catalogue.products(page.offset, page.offset + page.limit))
    assert seen == list(range(products))
