"""A reference client for each mock style: walk every page, keep every record.

Records are returned with their catalogue index (page offset + position), so
a test can line them up with the server's ground truth even when a malformed
record has no id.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from mocks import MockServer

Record = tuple[int, dict[str, Any]]  # (catalogue index, record)


async def get_json(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[Any, aiohttp.ClientResponse]:
    async with http.get(url, **kw) as response:
        assert response.status == 200, (url, response.status, await response.text())
        return await response.json(), response


async def walk(http: aiohttp.ClientSession, server: MockServer, page_size: int) -> list[Record]:
    style, url = server.spec.style, server.api_url
    headers = {"x-api-key": server.spec.required_api_key} if server.spec.required_api_key else {}
    records: list[Record] = []

    def keep(offset: int, items: list[dict[str, Any]]) -> None:
        assert len(items) <= page_size
        records.extend((offset + i, item) for i, item in enumerate(items))

    if style == "dummyjson":
        skip = 0
        while True:
            body, _ = await get_json(http, url, params={"limit": page_size, "skip": skip})
            assert body["skip"] == skip and body["limit"] == len(body["products"])
            if not body["products"]:
                assert skip >= body["total"] and body["limit"] == 0
                break
            keep(skip, body["products"])
            skip += page_size
    elif style == "platzi":
        offset = 0
        while True:
            body, _ = await get_json(http, url, params={"offset": offset, "limit": page_size})
            assert isinstance(body, list)
            keep(offset, body)
            if len(body) < page_size:
                break
            offset += page_size
    elif style == "reqres":
        page, total_pages = 1, None
        while total_pages is None or page <= total_pages:
            body, _ = await get_json(http, url, params={"page": page, "per_page": page_size}, headers=headers)
            assert body["page"] == page and body["per_page"] == page_size
            total_pages = body["total_pages"]
            keep((page - 1) * page_size, body["data"])
            page += 1
        body, _ = await get_json(http, url, params={"page": page, "per_page": page_size}, headers=headers)
        assert body["data"] == []
    elif style == "jsonserver":
        next_url: str | None = f"{url}?_page=1&_limit={page_size}"
        page = 1
        while next_url:
            body, response = await get_json(http, next_url)
            total = int(response.headers["X-Total-Count"])
            keep((page - 1) * page_size, body)
            links = response.links
            assert "first" in links and "last" in links
            next_url = str(links["next"]["url"]) if "next" in links else None
            page += 1
        assert (page - 2) * page_size < total <= (page - 1) * page_size
        body, response = await get_json(http, url, params={"_page": page, "_limit": page_size})
        assert body == [] and "Link" not in response.headers
    elif style == "cursor":
        cursor, offset = "", 0
        while True:
            params = {"limit": page_size, **({"cursor": cursor} if cursor else {})}
            body, _ = await get_json(http, url, params=params)
            keep(offset, body["data"])
            offset += len(body["data"])
            if body["next_cursor"] is None:
                break
            cursor = body["next_cursor"]
    else:  # pragma: no cover - a new style needs a walker here
        raise AssertionError(style)
    return records
