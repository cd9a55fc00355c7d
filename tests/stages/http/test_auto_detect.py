"""`paginate: {style: auto}` and `normalize: {map: auto}`.

End to end (`flow run` in a subprocess): for every mock style, with faults,
and for json-server 0.17.4 (a real server from npm), a graph of `style: auto`
and `map: auto` writes exactly the products and dead letters the explicit
configuration writes; the choices are said on stderr and in run.json; a
shape neither knows is refused, located, with what was seen. Unit level:
`decide` and `infer` on the shapes they read and refuse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest

from mocks._catalogue import Catalogue
from mocks.styles import make_style
from stages.http.detect import Answer, Detected, Refused, decide
from stages.records.infer import Unmappable, infer
from stages.records.presets import PRESETS
from tests.json_server import json_server, write_db

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
PATHS = {"dummyjson": "/products", "platzi": "/api/v1/products", "reqres": "/api/products",
         "jsonserver": "/products", "cursor": "/items"}  # fmt: skip
HEADERS = {"reqres": '{x-api-key: "reqres-free-v1"}'}
EXPLICIT_STYLE = {"dummyjson": "skip_limit", "platzi": "offset", "reqres": "page", "jsonserver": "link",
                  "cursor": "cursor"}  # fmt: skip


def flow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flow", *args], cwd=cwd, capture_output=True, text=True, timeout=90, env=ENV
    )


def _node(name: str, url: str, style: str, preset: str | None, headers: str = "") -> str:
    paging = f"{{url: \"{url}\", style: {style}, page_size: 20{', headers: ' + headers if headers else ''}}}"
    parse = f"{{parse: {{schema: {preset}}}}}" if preset else "parse"
    normalize = f"{{normalize: {{preset: {preset}}}}}" if preset else "{normalize: {map: auto}}"
    return (
        f"  {name}: {{pipe: [{{paginate: {paging}}}, {{rate_limit: {{rate: 50/s}}}}, "
        f"{{fetch: {{retry: {{retries: 6, backoff: 0.01s, max: 0.05s}}}}}}, {parse}, {normalize}]}}\n"
    )


def _graph(sources: dict[str, tuple[str, str, str | None, str]], mocks: str = "") -> str:
    text = "version: 1\nrun: {deadline: 60s}\n" + mocks + "nodes:\n"
    for name, (url, style, preset, headers) in sources.items():
        text += _node(name, url, style, preset, headers)
    names = ", ".join(sources)
    text += f"  out:\n    from: [{names}]\n    pipe: [merge, {{summary_json: {{path: summary.json}}}}]\n"
    text += "  rejects:\n    from: \"*.dead_letters\"\n    pipe: [{collect: {path: dead.jsonl}}]\n"
    return text


def _outputs(out: Path) -> tuple[list[str], list[str]]:
    """Products (but processed_at) and dead letters (but timestamp), as sorted JSON lines."""
    summary = json.loads((out / "summary.json").read_text())
    products = sorted(json.dumps({k: v for k, v in p.items() if k != "processed_at"}, sort_keys=True)
                      for p in summary["products"])  # fmt: skip
    dead = sorted(
        json.dumps({k: v for k, v in json.loads(line).items() if k != "timestamp"}, sort_keys=True)
        for line in (out / "dead.jsonl").read_text().splitlines()
    )
    return products, dead


def test_auto_reproduces_the_explicit_output_for_every_mock_style(tmp_path):
    mocks = "mocks:\n" + "".join(
        f"  {style}: {{style: {style}, products: {97 + 13 * i}, latency: 1ms..15ms, error_rate: 0.1,"
        f" truncate_rate: 0.03, html_rate: 0.03}}\n"
        for i, style in enumerate(PATHS)
    )

    def sources(auto: bool) -> dict[str, tuple[str, str, str | None, str]]:
        out = {}
        for style, path in PATHS.items():
            paging = "auto" if auto else EXPLICIT_STYLE[style]
            out[style] = (f"${{mocks.{style}.url}}{path}", paging, None if auto else style, HEADERS.get(style, ""))
        return out

    (tmp_path / "explicit.yaml").write_text(_graph(sources(False), mocks))
    (tmp_path / "auto.yaml").write_text(_graph(sources(True), mocks))
    explicit = flow("run", "explicit.yaml", "--out", "explicit", "--no-progress", cwd=tmp_path)
    auto = flow("run", "auto.yaml", "--out", "auto", "--no-progress", cwd=tmp_path)
    assert explicit.returncode == 0, explicit.stderr
    assert auto.returncode == 0, auto.stderr
    products, dead = _outputs(tmp_path / "explicit")
    assert len(products) > 500 and dead  # every style served records, and defects
    assert _outputs(tmp_path / "auto") == (products, dead)
    # Said on stderr, and in run.json, once per source.
    for style in PATHS:
        assert f"{style}: paginate: style {EXPLICIT_STYLE[style]}" in auto.stderr
        assert f"{style}: normalize: map: auto -> id: id, title: {PRESETS[style].fields['title']}" in auto.stderr
    events = json.loads((tmp_path / "auto" / "run.json").read_text())["events"]
    chosen = {e["node"]: e["style"] for e in events if e["event"] == "paging_detected"}
    assert chosen == EXPLICIT_STYLE
    inferred = {e["source"]: (e["map"], e["price_in_cents"]) for e in events if e["event"] == "mapping_inferred"}
    assert inferred == {style: (PRESETS[style].fields, PRESETS[style].cents) for style in PATHS}


def _jsonserver_records(n: int) -> list[Any]:
    """The mock catalogue rendered as json-server's usual records (European
    price strings, category lists, some records defective)."""
    catalogue = Catalogue(n, seed=7, defect_rate=0.05)
    return msgspec.json.decode(bytes(make_style("jsonserver", 7).render_page(catalogue, 0, n)))


def test_auto_reproduces_the_explicit_output_against_json_server(tmp_path):
    db = write_db(tmp_path / "db.json", {"products": _jsonserver_records(173)})
    with json_server(db) as url:
        (tmp_path / "explicit.yaml").write_text(
            _graph({"shop": (f"{url}/products", "link", "jsonserver", "")}))
        (tmp_path / "auto.yaml").write_text(_graph({"shop": (f"{url}/products", "auto", None, "")}))
        explicit = flow("run", "explicit.yaml", "--out", "explicit", "--no-progress", cwd=tmp_path)
        auto = flow("run", "auto.yaml", "--out", "auto", "--no-progress", cwd=tmp_path)
    assert explicit.returncode == 0, explicit.stderr
    assert auto.returncode == 0, auto.stderr
    products, dead = _outputs(tmp_path / "explicit")
    assert len(products) + len(dead) >= 173 - 10 and dead  # a few duplicates aside, every record
    assert _outputs(tmp_path / "auto") == (products, dead)
    assert 'shop: paginate: style link, from a Link header (rel="next" with _page)' in auto.stderr
    assert "shop: normalize: map: auto -> id: id, title: title, price: price, category: categories" in auto.stderr


def test_auto_refuses_a_shape_it_does_not_know_located_with_what_it_saw(tmp_path):
    """json-server serving an object (no list of records, no paging keys), and
    records without a price: refused, said where, nothing made up."""
    db = write_db(tmp_path / "db.json", {"things": [{"sku": "a", "label": "x"}, {"sku": "b", "label": "y"}],
                                         "config": {"version": 3, "owner": "ops"}})  # fmt: skip
    with json_server(db) as url:
        (tmp_path / "g.yaml").write_text(_graph({"conf": (f"{url}/config", "auto", None, ""),
                                                 "things": (f"{url}/things", "auto", None, "")}))  # fmt: skip
        result = flow("run", "g.yaml", "--out", "o", "--no-progress", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    errors = json.loads((tmp_path / "o" / "run.json").read_text())["errors"]
    by_node = {e["node"]: e for e in errors}
    assert by_node["conf"]["error"] == "paging_unknown"
    assert "an object with no list of records (keys: version, owner)" in by_node["conf"]["detail"]
    assert by_node["things"]["error"] == "mapping_unknown"
    assert "no field for price in 2 records (keys: label, sku)" in by_node["things"]["detail"]
    dead = [json.loads(line) for line in (tmp_path / "o" / "dead.jsonl").read_text().splitlines()]
    assert sorted(d["raw"]["sku"] for d in dead) == ["a", "b"]  # every record kept, with the reason
    assert all("map: auto found no field for price" in d["reason"] for d in dead)


# --- decide: the paging style from probe answers --------------------------------------------
def _answer(body: Any, headers: dict[str, str] | None = None, query: dict[str, str] | None = None) -> Answer:
    return Answer(query if query is not None else {"_page": "1", "_limit": "20"},
                  json.dumps(body).encode(), headers or {})  # fmt: skip


RECORDS = [{"id": i} for i in range(3)]


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        (RECORDS, {"Link": '<http://h/p?_page=2&_limit=20>; rel="next"'}, ("link", None, None, None)),
        (RECORDS, {"link": '<http://h/p?page=2&per_page=20>; rel="next"'}, ("page", None, None, None)),
        (RECORDS, {"X-Total-Count": "3"}, ("link", None, None, None)),
        ({"data": RECORDS, "page": 1, "total_pages": 4}, {}, ("page", "data", "total_pages", None)),
        ({"results": RECORDS, "nextCursor": None}, {}, ("cursor", "results", None, "nextCursor")),
        ({"products": RECORDS, "total": 9, "skip": 0, "limit": 30}, {}, ("skip_limit", "products", "total", None)),
        ({"rows": RECORDS, "total": 9, "offset": 0}, {}, ("offset", "rows", "total", None)),
        ({"hits": RECORDS, "total": 9, "page": 1, "per_page": 3}, {}, ("page", "hits", "total", None)),
        # The position key names the style, not `limit` (Spotify's envelope pages by offset).
        ({"items": RECORDS, "total": 9, "limit": 3, "offset": 0, "next": "https://h/p?offset=3&limit=3"}, {},
         ("offset", "items", "total", None)),
        ({"data": RECORDS, "total": 9, "page": 1, "limit": 3}, {}, ("page", "data", "total", None)),
    ],
)
def test_decide_reads_each_shape(body, headers, expected):
    found = decide([_answer(body, headers)], 20)
    assert isinstance(found, Detected) and found[:4] == expected


def test_a_bare_list_is_offset_paged_only_if_offset_and_limit_cut_it():
    first = _answer([{"id": i} for i in range(50)])
    assert decide([first], 20) == {"offset": "0", "limit": "20"}
    cut = _answer([{"id": i} for i in range(20)], query={"offset": "0", "limit": "20"})
    assert decide([first, cut], 20)[0] == "offset"
    uncut = _answer([{"id": i} for i in range(50)], query={"offset": "0", "limit": "20"})
    with pytest.raises(Refused, match="a bare list of 50 records whatever the paging parameters"):
        decide([first, uncut], 20)


def test_empty_answers_to_paging_parameters_are_checked_against_none():
    """An API taking unknown parameters as filters answers [] to both probes:
    asked without any, its records show it; an empty collection stays empty."""
    empty, empty_offset = _answer([]), _answer([], query={"offset": "0", "limit": "20"})
    assert decide([empty, empty_offset], 20) == {}
    with pytest.raises(Refused, match="50 records without paging parameters but none with them"):
        decide([empty, empty_offset, _answer([{"id": i} for i in range(50)], query={})], 20)
    assert decide([empty, empty_offset, _answer([], query={})], 20)[0] == "offset"
    with pytest.raises(Refused, match="no paging keys"):
        decide([_answer({"data": RECORDS, "total": 9, "limit": 3})], 20)  # a size, but no position


def test_a_refused_first_probe_is_asked_again_without_parameters_once():
    refused = Answer({"_page": "1", "_limit": "20"}, None, {}, "http_400: HTTP 400", 400)
    assert decide([refused], 20) == {}
    with pytest.raises(Refused, match=r"the probe request \(no paging parameters\) failed \(http_400"):
        decide([refused, Answer({}, None, {}, "http_400: HTTP 400", 400)], 20)
    unauthorized = Answer({"_page": "1", "_limit": "20"}, None, {}, "http_401: HTTP 401", 401)
    with pytest.raises(Refused, match="failed \\(http_401"):
        decide([unauthorized], 20)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>hi</html>", "is not JSON"),
        (b'"text"', "is a JSON str"),
        (b'{"a": [1, 2], "b": [3]}', "no list of records"),
        (b'{"data": [{"id": 1}], "count": 3}', "no paging keys"),
    ],
)
def test_decide_refuses_what_it_does_not_know(body, message):
    with pytest.raises(Refused, match=message):
        decide([Answer({"_page": "1", "_limit": "20"}, body, {})], 20)


def test_a_link_header_paging_by_other_names_is_refused():
    with pytest.raises(Refused, match=r"pages by \['cursor'\]"):
        decide([_answer(RECORDS, {"Link": '<http://h/p?cursor=x>; rel="next"'})], 20)


# --- infer: the mapping from records ---------------------------------------------------------
@pytest.mark.parametrize("style", list(PRESETS))
def test_infer_finds_each_styles_preset(style):
    catalogue = Catalogue(60, seed=3)
    records = msgspec.json.decode(bytes(make_style(style, 3).render_page(catalogue, 0, 60)))
    found = infer(records)
    assert (found.fields, found.cents) == (PRESETS[style].fields, PRESETS[style].cents)


def test_infer_reads_other_common_names_and_minor_units():
    records = [{"uuid": "u1", "product_name": "A", "amount": 1299, "categoryName": "toys",
                "meta": {"lastModified": "2024-01-01T00:00:00Z"}}] * 4  # fmt: skip
    found = infer(records)
    assert found.fields == {"id": "uuid", "title": "product_name", "price": "amount", "category": "categoryName",
                            "timestamp": "meta.lastModified"}  # fmt: skip
    assert found.cents  # integer amounts: minor units
    assert not infer([{**records[0], "amount": "12.99"}]).cents


def test_infer_prefers_what_most_records_hold_and_refuses_without_a_price():
    records = [{"id": i, "name": f"n{i}", "price": 1.5} for i in range(10)]
    records[0]["title"] = "only one record has a title"
    assert infer(records).fields["title"] == "name"
    with pytest.raises(Unmappable, match="no field for price in 2 records"):
        infer([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])


# --- end to end against APIs none of the mocks imitates --------------------------------------
class _API(BaseHTTPRequestHandler):
    """GET /items: 250 records; `shape` says how it pages (set per server)."""

    shape = "github"
    records = [{"id": i, "name": f"thing {i}", "cost": i + 0.5} for i in range(1, 251)]

    def do_GET(self) -> None:
        query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        headers: dict[str, str] = {}
        if self.shape == "github":  # page/per_page capped at 100, Link rel="next"
            size, page = min(int(query.get("per_page", 30)), 100), int(query.get("page", 1))
            body: Any = self.records[(page - 1) * size : page * size]
            if page * size < len(self.records):
                headers["Link"] = f'<http://{self.headers["Host"]}/items?page={page + 1}&per_page={size}>; rel="next"'
        elif self.shape == "spotify":  # {items, total, limit, offset, next}
            offset, limit = int(query.get("offset", 0)), min(int(query.get("limit", 20)), 50)
            body = {"items": self.records[offset : offset + limit], "total": len(self.records), "limit": limit,
                    "offset": offset, "next": None}  # fmt: skip
        else:  # "filters": every query parameter filters the records by that field
            body = [r for r in self.records if all(str(r.get(k)) == v for k, v in query.items())]
        data = json.dumps(body).encode()
        self.send_response(200)
        for name, value in {**headers, "Content-Type": "application/json"}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api():
    servers = []

    def serve(shape: str) -> str:
        handler = type("Handler", (_API,), {"shape": shape})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/items"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def _run_auto(tmp_path: Path, url: str, page_size: int) -> tuple[subprocess.CompletedProcess[str], list[Any]]:
    (tmp_path / "g.yaml").write_text(
        f"version: 1\nrun: {{deadline: 30s}}\nnodes:\n"
        f"  src: {{pipe: [{{paginate: {{url: \"{url}\", style: auto, page_size: {page_size}}}}}, "
        "{rate_limit: {rate: 50/s}}, fetch, parse, {normalize: {map: auto}}]}\n"
        "  out: {from: src, pipe: [{summary_json: {path: summary.json}}]}\n"
    )
    result = flow("run", "g.yaml", "--out", "o", "--no-progress", cwd=tmp_path)
    summary = tmp_path / "o" / "summary.json"
    return result, json.loads(summary.read_text())["products"] if summary.exists() else []


def test_a_link_header_api_capping_the_page_size_is_walked_whole(tmp_path, api):
    """GitHub-style: page/per_page with Link rel="next", per_page capped at
    100: asked for 200 a page, the first page of 100 is a cap, not the end."""
    result, products = _run_auto(tmp_path, api("github"), 200)
    assert result.returncode == 0, result.stderr
    assert 'src: paginate: style page, from a Link header (rel="next" with page)' in result.stderr
    assert sorted(p["source_id"] for p in products) == [str(i) for i in sorted(range(1, 251), key=str)]


def test_an_offset_envelope_with_a_limit_key_is_offset_paged(tmp_path, api):
    result, products = _run_auto(tmp_path, api("spotify"), 20)
    assert result.returncode == 0, result.stderr
    assert "src: paginate: style offset (items: items, total: total), from total and offset" in result.stderr
    assert len(products) == 250 and len({p["id"] for p in products}) == 250


def test_an_api_taking_paging_parameters_as_filters_is_refused_not_read_as_empty(tmp_path, api):
    result, products = _run_auto(tmp_path, api("filters"), 20)
    assert result.returncode == 1 and products == []
    assert "250 records without paging parameters but none with them" in result.stderr + json.dumps(
        json.loads((tmp_path / "o" / "run.json").read_text())["errors"])  # fmt: skip
