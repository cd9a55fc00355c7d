"""`flow run --cluster local:2`: four mock shops over two shards, each a Ray
actor running flow's runtime, in a network namespace of their own
(tests/cluster_netns.py). Judged from the servers' own logs and ground
truth: no sliding second over a shop's limit, every valid id served is in
the shards' outputs once, the merged ledger and the driver's report add
up; a SIGINT stops every shard with a valid partial report (exit 130); a
shard killed mid-run is restarted and its part delivered whole, once; the
cluster listens on loopback only."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mocks.evidence import max_per_window

ROOT = Path(__file__).resolve().parents[2]
SHOPS = {  # name -> (style, path, products)
    "s1": ("dummyjson", "/products", 140),
    "s2": ("platzi", "/api/v1/products", 110),
    "s3": ("reqres", "/api/products", 90),
    "s4": ("jsonserver", "/products", 100),
}


def _graph(work: Path, products: float = 1.0, rate: str = "5/s", workers: Any = 0, auto: bool = False) -> None:
    mocks = {name: {"style": style, "products": int(n * products), "error_rate": 0.05, "rate_limit": rate}
             for name, (style, _, n) in SHOPS.items()}  # fmt: skip
    (work / "mocks.yaml").write_text(yaml.safe_dump({"version": 1, "mocks": mocks}))
    nodes: dict[str, Any] = {}
    for i, (name, (style, path, _)) in enumerate(SHOPS.items()):
        paging = {"url": f"http://127.0.0.1:{18100 + i}{path}", "style": {"dummyjson": "skip_limit",
                  "platzi": "offset", "reqres": "page", "jsonserver": "link"}[style]}  # fmt: skip
        if style == "reqres":
            paging["headers"] = {"x-api-key": "reqres-free-v1"}
        if auto and style == "dummyjson":  # the paging style found by probing (style: auto)
            paging["style"] = "auto"
        nodes[name] = {"pipe": [{"paginate": paging}, {"rate_limit": {"rate": rate}},
                                {"fetch": {"retry": {"retries": 5, "backoff": "0.05s", "max": "0.3s"}}},
                                {"parse": {"schema": style}},
                                {"normalize": {"preset": style, "workers": workers}}]}  # fmt: skip
    window = {"name": "w", "time": "timestamp", "every": "28d", "by": "category", "lateness": "365d"}
    nodes["products"] = {"from": list(SHOPS), "pipe": ["merge", {"dedupe": {"key": "id"}}, {"window": window}]}
    nodes["out"] = {"from": ["products", "*.errors"], "pipe": [{"summary_json": {"path": "summary.json"}}]}
    # The whole run's report: in the driver, on what the shards relay (flow.relay).
    nodes["page"] = {"from": ["products", "products.windows", "*.errors", "*.dead_letters"],
                     "pipe": [{"report": {"path": "report.html"}}]}  # fmt: skip
    nodes["db"] = {"from": ["products"], "pipe": [{"sqlite": {"path": "products.db"}}]}
    graph = {"version": 1, "run": {"deadline": "60s", "grace": "5s"}, "nodes": nodes}
    (work / "g.yaml").write_text(yaml.safe_dump(graph, sort_keys=False))


def _run(work: Path, *flags: str) -> dict[str, Any]:
    subprocess.run(["unshare", "-n", sys.executable, str(ROOT / "tests" / "cluster_netns.py"), str(work), *flags],
                   check=True, timeout=180, cwd=ROOT)  # fmt: skip
    return json.loads((work / "result.json").read_text())


def _ids(work: Path) -> list[str]:
    """Every product id in the shards' SQLite outputs (one row per id and shard)."""
    ids: list[str] = []
    for db in sorted((work / "o").glob("shard-*/products.db")):
        with sqlite3.connect(db) as connection:
            ids += [row[0] for row in connection.execute("SELECT id FROM products")]
    return ids


def _report_rows(work: Path) -> dict[str, list[int]]:
    """The sources table of the driver's report.html: per source, failed
    pages, records, products that reached the report, dead letters, duplicates."""
    html = (work / "o" / "report.html").read_text()
    table = re.search(r"<section id='sources'>.*?</section>", html, re.S)
    assert table is not None
    rows = [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table[0])]
    return {cells[0]: [int(c) for c in cells[2:7]] for cells in rows if cells}


def _valid(result: dict[str, Any]) -> set[str]:
    return {f"{name}:{sid}" for name, stats in zip(SHOPS, result["stats"], strict=True)
            for sid in stats["truth"]["served"]["valid"]}  # fmt: skip


def test_four_shops_over_two_shards_within_every_limit_and_nothing_lost(tmp_path):
    _graph(tmp_path)
    result = _run(tmp_path)
    assert result["code"] == 0, result["stderr"]
    report = json.loads((tmp_path / "o" / "run.json").read_text())
    assert [sorted(s["sources"]) for s in report["shards"]] == [["s1", "s3"], ["s2", "s4"]]
    for name, stats in zip(SHOPS, result["stats"], strict=True):
        sends = [r["t"] for r in stats["requests"]]
        assert sends and max_per_window(sends) <= 5, name
    ids = _ids(tmp_path)
    assert len(ids) == len(set(ids)) and set(ids) == _valid(result)  # every valid id served, once
    for (source, row), stats in zip(sorted(report["ledger"].items()), result["stats"], strict=True):
        records, served = row["records"], stats["truth"]["served"]
        assert records["unaccounted"] == {"db": 0, "out": 0, "page": 0}, (source, row)
        # Dead letters and duplicates counted: as many as the server served malformed and repeated records.
        assert (records["dead_letters"], records["duplicates"]) == (len(served["malformed"]), len(served["duplicates"]))
        # The driver's report, from what the shards relayed: the same figures, each product once.
        dead, dupes = len(served["malformed"]), len(served["duplicates"])
        assert _report_rows(tmp_path)[source] == [0, records["received"], len(served["valid"]), dead, dupes]
    assert report["status"] == "completed" and report["lost"] == []
    assert report["driver"]["nodes"] == ["page"] and report["driver"]["status"] == "completed"
    # The final table on stdout, from the shards' last statuses: each source's records, as the ledger.
    table = {line.split()[0]: line.split() for line in result["stdout"].splitlines() if line[:2] in SHOPS}
    assert {name: int(row[2]) for name, row in table.items()} == {
        name: row["records"]["received"] for name, row in report["ledger"].items()}
    assert all(s["relayed"]["items"] > 0 and 0 < s["relayed"]["channel_most"] <= 256 for s in report["shards"])
    assert not list((tmp_path / "o").glob("shard-*/report.html")) and not (tmp_path / "o" / ".relay").exists()


def test_normalization_on_a_pool_of_actors_delivers_the_same(tmp_path):
    """`normalize: {workers: {ray: 2}}`: every batch normalized by one of two
    actors of the cluster; the output is the valid ids served, once."""
    _graph(tmp_path, workers={"ray": 2}, auto=True)
    result = _run(tmp_path)
    assert result["code"] == 0, result["stderr"]
    ids = _ids(tmp_path)
    assert len(ids) == len(set(ids)) and set(ids) == _valid(result)
    # Also: a choice a shard makes for the user (style: auto) is said on the driver's stderr, and is
    # an event of the run, named by its shard.
    assert "s1: paginate: style skip_limit" in result["stderr"]
    report = json.loads((tmp_path / "o" / "run.json").read_text())
    found = [e for e in report["events"] if e["event"] == "paging_detected"]
    assert [(e["node"], e["shard"]) for e in found] == [("s1", 0)]


def test_joining_a_cluster_that_runs(tmp_path):
    """`--cluster ray://HOST:PORT`: a cluster started apart (`ray start
    --head`, token authentication on) is joined as a client; the shards run
    there and the run delivers as on flow's own cluster."""
    _graph(tmp_path)
    result = _run(tmp_path, "--ray-head")
    assert result["code"] == 0, result["stderr"]
    report = json.loads((tmp_path / "o" / "run.json").read_text())
    assert len(report["shards"]) == 2 and report["status"] == "completed"
    ids = _ids(tmp_path)
    assert len(ids) == len(set(ids)) and set(ids) == _valid(result)


def test_sigint_stops_every_shard_with_a_valid_partial_report(tmp_path):
    """Also the driver's --status-port while the shards run: their newest
    statuses as one, every node named by its shard, the pages counted
    growing; `flow top` shows it."""
    _graph(tmp_path, products=4.0, rate="4/s")  # ~25 s of pages: the signal lands mid-run
    result = _run(tmp_path, "--interrupt", "7", "--status-port", "18190")
    assert result["code"] == 130, result["stderr"]
    running = [s for s in result["statuses"] if s["state"] == "running" and s["nodes"]]
    assert {name.split("/")[0] for name in running[-1]["nodes"]} == {"shard-0", "shard-1"}
    pages = [sum(c.get("pages", 0) for c in s["nodes"].values()) for s in running]
    assert pages[0] < pages[-1] and pages == sorted(pages), pages
    assert "shard-0/s1" in result["top"][0] and "shard-1/s2" in result["top"][0]
    report = json.loads((tmp_path / "o" / "run.json").read_text())
    assert report["status"] == "interrupted" and len(report["shards"]) == 2
    assert all(s["status"] == "interrupted" for s in report["shards"])
    assert set(report["ledger"]) == set(SHOPS)
    served = sum(len(s["truth"]["served"]["valid"]) for s in result["stats"])
    assert 0 < len(_ids(tmp_path)) <= served < sum(n for _, _, n in SHOPS.values()) * 4


def test_a_shard_killed_mid_run_is_restarted_and_its_part_delivered_once(tmp_path):
    _graph(tmp_path, products=2.0)
    result = _run(tmp_path, "--kill-shard", "1.5")
    assert result["code"] == 0, result["stderr"]
    report = json.loads((tmp_path / "o" / "run.json").read_text())
    assert [s["restarts"] for s in report["shards"]] == [0, 1]
    assert {name: row.get("restarts", 0) for name, row in report["ledger"].items()} == {
        name: int(name in report["shards"][1]["sources"]) for name in SHOPS}  # the ledger says so too
    ids = _ids(tmp_path)
    assert len(ids) == len(set(ids)) and set(ids) == _valid(result)
    # What the killed process relayed to the driver (it had: two processes relayed) was dropped: its
    # part is counted once in the report.
    assert [s["relayed"]["processes"] for s in report["shards"]] == [1, 2]
    rows = _report_rows(tmp_path)
    for name, stats in zip(SHOPS, result["stats"], strict=True):
        assert rows[name][2] == len(stats["truth"]["served"]["valid"]), name


@pytest.mark.parametrize("leased", [True, False])
def test_one_budget_leased_across_two_shards_holds_at_the_servers(tmp_path, leased):
    """Two shops, one budget of 5/s spanning both shards (across_shards):
    about 60 requests, and no sliding second holds a 6th, counted over
    both servers' logs together. The control, a budget of 5/s per shop
    in each shard, goes over it: the check can fail."""
    mocks = {"s1": {"style": "dummyjson", "products": 600, "rate_limit": "50/s"},
             "s2": {"style": "platzi", "products": 560, "rate_limit": "50/s"}}  # fmt: skip
    (tmp_path / "mocks.yaml").write_text(yaml.safe_dump({"version": 1, "mocks": mocks}))
    budget: Any = {"rate_limit": {"name": "shared", "rate": "5/s", "across_shards": True}} if leased else {
        "rate_limit": {"rate": "5/s"}}  # fmt: skip
    nodes = {
        "s1": {"pipe": [{"paginate": {"url": "http://127.0.0.1:18100/products", "style": "skip_limit"}}, budget,
                        "fetch", {"parse": {"schema": "dummyjson"}}, {"normalize": {"preset": "dummyjson"}}]},
        "s2": {"pipe": [{"paginate": {"url": "http://127.0.0.1:18101/api/v1/products", "style": "offset"}},
                        budget, "fetch", {"parse": {"schema": "platzi"}}, {"normalize": {"preset": "platzi"}}]},
        "out": {"from": ["s1", "s2"], "pipe": ["merge", {"summary_json": {"path": "summary.json"}}]},
    }  # fmt: skip
    # The cluster named by the graph itself (`cluster:`), not by the --cluster flag.
    graph = {"version": 1, "run": {"deadline": "60s"}, "cluster": {"shards": 2}, "nodes": nodes}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(graph, sort_keys=False))
    result = _run(tmp_path, "--graph-says")
    assert result["code"] == 0, result["stderr"]
    assert "flow: shard 0: s1" in result["stderr"] and "flow: shard 1: s2" in result["stderr"]
    # Both servers' logs on one clock: each `t` is seconds since its server started, `uptime` now.
    sends = [r["t"] - s["server"]["uptime"] for s in result["stats"] for r in s["requests"]]
    assert 58 <= len(sends) <= 66
    assert (max_per_window(sends) <= 5) is leased


@pytest.mark.parametrize("loopback", [True, False])
def test_a_local_cluster_listens_on_loopback_only_on_a_host_with_a_network(tmp_path, loopback):
    """In a namespace with an address besides loopback's and a default route
    from it (where Ray takes that address for its node and its servers bind
    every interface), flow's own cluster listens on loopback only: the
    kernel's listening sockets, read every 0.2 s through the run, show none
    elsewhere. The control, Ray's setting turned back by the environment,
    listens beyond loopback: flow says so and runs nothing (exit 2)."""
    _graph(tmp_path, products=0.3)
    result = _run(tmp_path, "--network", *([] if loopback else ["--env", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1"]))
    if loopback:
        assert result["code"] == 0, result["stderr"]
        assert result["exposed"] == []
    else:
        assert result["code"] == 2 and "Ray listens beyond loopback: " in result["stderr"], result["stderr"]
        assert any("gcs_server" in found for found in result["exposed"]), result["exposed"]
        assert not (tmp_path / "o" / "shard-0").exists()  # nothing ran
