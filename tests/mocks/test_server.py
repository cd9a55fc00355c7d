"""The server's answers outside the happy path, its observation routes, and
the fidelity of each style's records and pagination metadata."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from mocks import STYLES, Catalogue, ManualClock, MockServer, ServerSpec, serve


async def get(http: Any, url: str, **kw: Any) -> tuple[int, Any, Any]:
    async with http.get(url, **kw) as response:
        body = await response.json(content_type=None)
        return response.status, body, response.headers


async def test_reqres_demands_its_api_key(http, start_mock):
    server = await start_mock(style="reqres", products=30)
    status, body, _ = await get(http, server.api_url)
    assert (status, body["error"]) == (401, "Missing API key")
    status, body, _ = await get(http, server.api_url, headers={"x-api-key": "wrong"})
    assert (status, body["error"]) == (401, "Invalid API key")
    status, body, _ = await get(http, server.api_url, headers={"x-api-key": "reqres-free-v1"})
    assert status == 200 and body["total"] == 30 and body["total_pages"] == 2
    assert set(body) == {"page", "per_page", "total", "total_pages", "data", "support"}


async def test_any_style_can_demand_a_key_and_reqres_can_drop_it(http, start_mock):
    guarded = await start_mock(style="platzi", products=5, api_key="s3cret")
    assert (await get(http, guarded.api_url))[0] == 401
    assert (await get(http, guarded.api_url, headers={"x-api-key": "s3cret"}))[0] == 200
    open_reqres = await start_mock(style="reqres", products=5, api_key="")
    assert (await get(http, open_reqres.api_url))[0] == 200


@pytest.mark.parametrize(
    "style,query,fragment",
    [
        ("dummyjson", "limit=abc", "'limit' must be an integer"),
        ("dummyjson", "skip=-1", "'skip' must be >= 0"),
        ("platzi", "offset=x", "'offset' must be an integer"),
        ("jsonserver", "_page=0", "'_page' must be >= 1"),
        ("cursor", "cursor=bm9wZQ", "invalid cursor"),
        ("cursor", "limit=0", "'limit' must be >= 1"),
    ],
)
async def test_bad_queries_get_400_with_a_message(http, start_mock, style, query, fragment):
    server = await start_mock(style=style, products=10)
    status, body, _ = await get(http, f"{server.api_url}?{query}")
    assert status == 400
    assert fragment in str(body)
    assert server.stats()["requests"][0]["fault"] == "bad_request"


async def test_a_forged_cursor_is_refused(http, start_mock):
    server = await start_mock(style="cursor", products=100, duplicate_rate=0, defect_rate=0)
    other = MockServer(ServerSpec(style="cursor", seed=99)).style
    status, _, _ = await get(http, server.api_url, params={"cursor": other.encode(40)})
    assert status == 400
    status, body, _ = await get(http, server.api_url, params={"cursor": server.style.encode(40), "limit": 30})
    assert status == 200 and body["data"][0]["id"] == "prod_0000041"


async def test_unknown_path_and_method(http, start_mock):
    server = await start_mock(style="dummyjson", products=10)
    assert (await get(http, server.url + "/nope"))[0] == 404
    async with http.post(server.api_url) as response:
        assert response.status == 405


async def test_dummyjson_limits_and_end(http, start_mock):
    server = await start_mock(style="dummyjson", products=45, max_page_size=30)
    _, body, _ = await get(http, server.api_url)
    assert (len(body["products"]), body["limit"], body["skip"], body["total"]) == (20, 20, 0, 45)
    _, body, _ = await get(http, server.api_url, params={"limit": 0})  # "everything", capped
    assert len(body["products"]) == 30
    _, body, _ = await get(http, server.api_url, params={"limit": 20, "skip": 40})
    assert (len(body["products"]), body["limit"]) == (5, 5)
    _, body, _ = await get(http, server.api_url, params={"limit": 20, "skip": 60})
    assert (body["products"], body["limit"], body["total"]) == ([], 0, 45)


async def test_jsonserver_link_header(http, start_mock):
    server = await start_mock(style="jsonserver", products=45)
    status, body, headers = await get(http, server.api_url, params={"_page": 2, "_limit": 20, "q": "x"})
    assert status == 200 and len(body) == 20 and headers["X-Total-Count"] == "45"
    assert headers["Link"].count('rel="') == 4
    assert f'<{server.api_url}?_page=3&_limit=20&q=x>; rel="next"' in headers["Link"]  # keeps other params
    base = server.api_url
    async with http.get(server.api_url, params={"_page": 2, "_limit": 20}) as response:
        rels = {rel: str(link["url"]) for rel, link in response.links.items()}
    assert rels == {
        "first": f"{base}?_page=1&_limit=20",
        "prev": f"{base}?_page=1&_limit=20",
        "next": f"{base}?_page=3&_limit=20",
        "last": f"{base}?_page=3&_limit=20",
    }
    async with http.get(server.api_url, params={"_page": 1, "_limit": 20}) as response:
        assert set(response.links) == {"first", "next", "last"}
    async with http.get(server.api_url, params={"_page": 3, "_limit": 20}) as response:
        assert set(response.links) == {"first", "prev", "last"}
    _, body, headers = await get(http, server.api_url)  # no _page: everything (capped)
    assert len(body) == 45 and "Link" not in headers


async def test_platzi_is_a_bare_array_without_totals(http, start_mock):
    server = await start_mock(style="platzi", products=25)
    _, body, headers = await get(http, server.api_url, params={"offset": 20, "limit": 20})
    assert isinstance(body, list) and len(body) == 5
    assert "X-Total-Count" not in headers
    _, body, _ = await get(http, server.api_url, params={"offset": 40, "limit": 20})
    assert body == []


async def test_same_seed_same_bytes(http):
    spec = ServerSpec(style="dummyjson", products=500, seed=42, rate_limit="off")
    bodies = []
    for _ in range(2):
        async with serve({"a": spec}) as servers, http.get(servers["a"].api_url + "?skip=100") as r:
            bodies.append(await r.read())
    assert bodies[0] == bodies[1]
    other = ServerSpec(style="dummyjson", products=500, seed=43)
    async with serve({"b": other}) as servers, http.get(servers["b"].api_url + "?skip=100") as r:
        assert await r.read() != bodies[0]


async def test_a_million_products_cost_nothing_up_front(http, start_mock):
    server = await start_mock(style="cursor", products=1_000_000)
    cursor = server.style.encode(999_990)
    status, body, _ = await get(http, server.api_url, params={"cursor": cursor})
    assert status == 200 and body["next_cursor"] is None
    assert [r.get("id") for r in body["data"]][-1] == "prod_1000000"
    assert server.stats(summary=True)["counts"]["served_records"] == 10


def test_heterogeneity_shows_every_form_at_the_configured_rate():
    catalogue = Catalogue(4000, seed=1, heterogeneity=0.3, defect_rate=0.05, duplicate_rate=0.04)
    products = catalogue.products(0, 4000)
    for attribute in ("price_form", "category_form", "title_form"):
        varied = sum(1 for p in products if getattr(p, attribute))
        assert abs(varied / 4000 - 0.3) < 0.035, attribute
    truth = catalogue.truth()
    assert abs(len(truth["malformed"]) / 4000 - 0.05) < 0.015
    assert abs(len(truth["duplicates"]) / 4000 - 0.04) < 0.015
    assert Counter(m["defect"] for m in truth["malformed"]).keys() == {
        "missing_id",
        "missing_title",
        "blank_title",
        "null_price",
        "negative_price",
    }


@pytest.mark.parametrize("style", STYLES)
async def test_records_show_the_variants_a_client_must_normalise(http, start_mock, style):
    server = await start_mock(style=style, products=300, heterogeneity=0.5, seed=3, max_page_size=300)
    headers = {"x-api-key": "reqres-free-v1"}
    params = {
        "dummyjson": {"limit": 300},
        "platzi": {"limit": 300},
        "reqres": {"per_page": 300},
        "jsonserver": {"_page": 1, "_limit": 300},
        "cursor": {"limit": 300},
    }[style]
    _, body, _ = await get(http, server.api_url, params=params, headers=headers)
    items = body if isinstance(body, list) else body.get("products") or body.get("data")
    price_key = {"reqres": "cost", "cursor": "unit_amount"}.get(style, "price")
    kinds = Counter(type(item.get(price_key)).__name__ for item in items)
    assert {"str", "NoneType"} <= set(kinds) and ({"int", "float"} & set(kinds))
    strings = [i[price_key] for i in items if isinstance(i.get(price_key), str)]
    assert any("," in s for s in strings)  # thousands separators or decimal commas
    titles = [i.get("title", i.get("name")) for i in items if i.get("title", i.get("name"))]
    assert any(t != t.strip() for t in titles) and any(not t.isascii() for t in titles)
    assert any("id" not in item for item in items)


async def test_stats_and_reset_over_http(http, start_mock):
    clock = ManualClock()
    server = await start_mock(style="platzi", products=50, clock=clock, rate_limit="5/s")
    for _ in range(7):
        await get(http, server.api_url, params={"offset": 0, "limit": 10})
    status, stats, _ = await get(http, server.url + "/__stats")
    assert status == 200
    assert stats["counts"]["requests"] == 7
    assert stats["counts"]["by_status"] == {"200": 5, "429": 2}
    assert stats["requests"][0]["query"] == {"offset": "0", "limit": "10"}
    assert stats["truth"]["served"]["records"] == 10
    _, summary, _ = await get(http, server.url + "/__stats?summary=1")
    assert "requests" not in summary and summary["counts"]["requests"] == 7
    async with http.post(server.url + "/__reset") as response:
        assert response.status == 200
    _, stats, _ = await get(http, server.url + "/__stats")
    assert stats["requests"] == [] and stats["truth"]["served"]["records"] == 0
    # The limiter was reset too: five more go through at once.
    assert [(await get(http, server.api_url))[0] for _ in range(6)] == [200] * 5 + [429]
    assert (await get(http, server.url + "/__health"))[1]["ok"] is True
    assert (await get(http, server.url + "/__nope"))[0] == 404


async def test_serve_closes_everything_when_a_start_fails():
    # Two servers asking for the same fixed port: the second cannot bind.
    async with serve({"probe": ServerSpec()}) as servers:
        port = servers["probe"].port
    specs = {"a": ServerSpec(port=port), "b": ServerSpec(port=port)}
    with pytest.raises(OSError):
        async with serve(specs):
            pass  # pragma: no cover
