"""Values taken from the environment never reach a message or a report:
not in validation errors, not in an error's url or detail, not in run.json."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flow.graph import check
from flow.registry import default_registry
from flow.runtime import Runtime
from flow.spec import SpecError, parse_spec
from flow.testing import run_virtual
from mocks import LoopClock, MockServer, ServerSpec

TOKEN = "s3cr3t-path-token"
REGISTRY = default_registry(plugins=False)


def test_a_bad_value_from_the_environment_is_not_echoed():
    text = "version: 1\nnodes:\n  a: {pipe: [sequence, {window: {every: '${WINDOW}'}}, collect]}\n"
    with pytest.raises(SpecError) as caught:
        parse_spec(text, REGISTRY, env={"WINDOW": TOKEN})
    assert TOKEN not in str(caught.value) and "${WINDOW}" in str(caught.value)


def test_a_secret_in_the_url_path_is_redacted_in_errors_and_the_report(tmp_path):
    graph = (
        "version: 1\nrun: {deadline: 1m}\nmocks: {shop: {style: platzi}}\nnodes:\n"
        "  shop: {pipe: [{paginate: {url: '${mocks.shop.url}/${TOKEN}/products', style: page}},"
        " {fetch: {retry: {retries: 0}}}, {parse: {schema: platzi}}]}\n"
        "  out: {from: [shop, shop.errors], pipe: [collect: {path: out.jsonl}]}\n"
    )

    async def main() -> Any:
        async with MockServer(ServerSpec(style="platzi", products=40), clock=LoopClock()) as server:
            spec = parse_spec(graph, REGISTRY, env={"TOKEN": TOKEN}, refs={"shop": server.url})
            assert check(spec) == []
            return await Runtime(spec, out_dir=tmp_path).run()

    result = run_virtual(main())
    assert [e["error"] for e in result.errors][:1] == ["http_404"]  # the server saw the real path
    report = json.dumps(result.report()) + (tmp_path / "out.jsonl").read_text()
    assert TOKEN not in report
    assert "/${TOKEN}/products" in result.errors[0]["url"]


def test_a_url_encoded_secret_is_scrubbed_too():
    from flow._interpolate import scrub

    secrets = {"ab+cd/ef==": "${SIG}"}
    assert scrub("http://x/p?sig=ab%2Bcd%2Fef%3D%3D", secrets) == "http://x/p?sig=${SIG}"
    assert scrub("http://x/p?sig=ab+cd%2Fef%3D%3D", secrets) == "http://x/p?sig=${SIG}"

    from flow.spec import parse_spec as parse

    spec = parse("version: 1\nnodes:\n  a: {pipe: [sequence, collect]}\n", REGISTRY, env={})
    assert spec.secrets == {}
    text = "version: 1\nx-s: '${STYLE}'\nnodes:\n  a: {pipe: [sequence, collect]}\n"
    assert parse(text, REGISTRY, env={"STYLE": "page"}).secrets == {}  # too short to hide: it would scrub "page"
