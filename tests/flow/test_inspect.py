"""Live inspection of a running graph, end to end in real processes on
loopback: `flow run --status-port 0` serves /status and /tap; `flow top`
redraws its table on a terminal; `flow tap` prints the items passing a node;
a slow tap drops items and the run's outputs do not change."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flow.tap import NodeTaps

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "error::ResourceWarning"}
FLOW = [sys.executable, "-m", "flow"]

# One source at 5 pages/s: 20 pages of 20 products, about 4 s of run.
GRAPH = """\
version: 1
run: {deadline: 30s}
mocks:
  shop: {style: platzi, products: PRODUCTS, rate_limit: off, defect_rate: 0, duplicate_rate: 0}
nodes:
  shop:
    pipe:
      - paginate: {url: "${mocks.shop.url}/api/v1/products", style: offset, page_size: PAGE}
      - rate_limit: {rate: RATE}
      - fetch
      - parse: {schema: platzi}
      - normalize: {preset: platzi}
  report:
    from: [shop, "*.errors", "*.dead_letters"]
    pipe: [{summary_json: {path: summary.json}}]
"""


def graph(tmp_path: Path, products: int = 400, page: int = 20, rate: str = "5/s") -> Path:
    path = tmp_path / "g.yaml"
    text = GRAPH.replace("PRODUCTS", str(products)).replace("PAGE", str(page)).replace("RATE", rate)
    path.write_text(text)
    return path


@contextmanager
def running(path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`flow run` with a status server, and its URL (read from stderr); killed
    if the test leaves it running."""
    proc = subprocess.Popen(
        [*FLOW, "run", path.name, "--out", "o", "--status-port", "0"],
        cwd=path.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert time.monotonic() < deadline and proc.poll() is None, "no status line"
            if select.select([proc.stderr], [], [], 0.1)[0]:
                line = proc.stderr.readline()  # type: ignore[union-attr]
                if line.startswith("status: "):
                    break
        yield proc, line.removeprefix("status: ").strip()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def finished(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


def status(url: str) -> dict:
    with urllib.request.urlopen(f"{url}status", timeout=5) as response:
        return json.loads(response.read())


def flow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLOW, *args], capture_output=True, text=True, timeout=30, env=ENV)


def listening_addresses(port: int) -> list[str]:
    """Local addresses of the sockets listening on `port` (/proc/net/tcp, tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.readlines()[1:]:
                local, state = row.split()[1], row.split()[3]
                address, hex_port = local.rsplit(":", 1)
                if int(hex_port, 16) == port and state == "0A":  # 0A: LISTEN
                    found.append(address)
    return found


def test_status_and_tap_while_it_runs(tmp_path):
    with running(graph(tmp_path)) as (proc, url):
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url)
        port = int(url.rsplit(":", 1)[1].strip("/"))
        assert listening_addresses(port) == ["0100007F"]  # 127.0.0.1, and no other interface

        shown = flow("tap", url, "shop", "-n", "5")
        assert shown.returncode == 0, shown.stderr
        batches = [json.loads(line) for line in shown.stdout.splitlines()]
        assert len(batches) == 5
        for batch in batches:
            assert set(batch) == {"endpoint", "page", "products"} and batch["endpoint"] == "shop"
            assert batch["products"] and {"id", "title", "price"} <= set(batch["products"][0])

        unknown = flow("tap", url, "nope")
        assert unknown.returncode == 1 and unknown.stdout == ""
        assert "no node 'nope' in the graph; the graph's nodes: shop, report" in unknown.stderr

        now = status(url)
        assert now["state"] == "running" and now["elapsed"] > 0 and now["run_id"]
        assert list(now["nodes"]) == ["shop", "report"]
        shop = now["nodes"]["shop"]
        assert [s["stage"] for s in shop["stages"]] == [
            "paginate",
            "rate_limit",
            "fetch",
            "parse",
            "normalize",
        ]
        assert shop["items_out"] >= 5 and shop["counters"]["products"] >= 100
        main = shop["outputs"][0]  # the buffer it writes into, then its side outputs'
        assert (main["to"], main["port"], main["capacity"]) == ("report", None, 8) and 0 <= main["fill"] <= 8
        assert {(edge["to"], edge["port"]) for edge in shop["outputs"][1:]} == {("report", "errors"),
                                                                                ("report", "dead_letters")}  # fmt: skip
        assert (
            shop["endpoints"]["shop"]["breaker"] == "closed"
            and shop["endpoints"]["shop"]["rate_limit"] == 5.0
        )
        assert shop["taps"] == {"attached": 0, "delivered": 5, "dropped": 0}
        assert now["nodes"]["report"]["input"]["to"] == "report"
        code, out, err = finished(proc)
    assert code == 0, err
    assert err == ""  # the status line was read; nothing else: no warning, no pending task
    assert "completed: 400 records in, 400 products made" in out


def test_top_redraws_in_place_until_the_run_ends(tmp_path):
    with running(graph(tmp_path)) as (proc, url):
        master, slave = os.openpty()
        try:
            top = subprocess.Popen(
                [*FLOW, "top", url, "--interval", "0.3"], stdout=slave, stderr=subprocess.PIPE, env=ENV
            )
            os.close(slave)
            drawn = b""
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if select.select([master], [], [], 0.2)[0]:
                    try:
                        chunk = os.read(master, 65536)
                    except OSError:  # the terminal's other end closed: top has exited
                        break
                    if not chunk:
                        break
                    drawn += chunk
            _, top_err = top.communicate(timeout=10)
            assert top.returncode == 0, top_err
        finally:
            os.close(master)
            if top.poll() is None:
                top.kill()
                top.communicate()
        code, _, err = finished(proc)
    assert code == 0, err
    text = drawn.decode().replace("\r\n", "\n")
    frames = text.split("\x1b[")
    assert len(frames) >= 3 and re.search(r"\x1b\[\d+F\x1b\[J", text)  # redrawn in place, at least twice
    shop_out = [int(m[1]) for m in re.finditer(r"^shop +(\d+) ", text, re.M)]
    assert len(shop_out) >= 3 and shop_out == sorted(shop_out) and shop_out[0] < shop_out[-1]
    assert re.search(r"^shop +\d+ +\d+\.\d ", text, re.M)  # items per second, once two polls were made
    assert text.rstrip().endswith("run ended")


def test_a_slow_tap_drops_items_and_the_run_is_unchanged(tmp_path):
    """A client that reads nothing: its tap holds a few items, drops the
    rest (counted), and every product still reaches summary.json."""
    products = 6000
    with running(graph(tmp_path, products=products, page=100, rate="20/s")) as (proc, url):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            slow.connect(("127.0.0.1", port))
            slow.sendall(b"GET /tap/shop?limit=1000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            taps = {"dropped": 0}
            deadline = time.monotonic() + 20
            while taps["dropped"] == 0:
                assert time.monotonic() < deadline and proc.poll() is None, taps
                taps = status(url)["nodes"]["shop"]["taps"]
                time.sleep(0.1)
            assert taps["attached"] == 1 and taps["delivered"] < products // 100
            code, _, err = finished(proc)
        finally:
            slow.close()
    assert code == 0, err
    assert err == ""
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["summary"]["status"] == "complete"
    assert sorted(p["id"] for p in summary["products"]) == sorted(f"shop:{i}" for i in range(1, products + 1))
    report = json.loads((tmp_path / "o" / "run.json").read_text())
    assert report["lost"] == [] and report["ledger"]["shop"]["records"]["unaccounted"] == {"report": 0}


def test_no_server_is_a_clear_error():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for command in (["top", f"http://127.0.0.1:{port}/"], ["tap", f"127.0.0.1:{port}", "shop"]):
        result = flow(*command)
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.startswith(f"flow: error: cannot reach http://127.0.0.1:{port}/")
        assert "Connection refused" in result.stderr and "Traceback" not in result.stderr


# --- the tap itself (flow.tap), no process ---------------------------------------------
async def test_a_full_tap_drops_and_counts_and_the_others_are_unaffected():
    taps = NodeTaps()
    assert not taps  # the runtime's whole cost while no one taps: this truth test
    small, big = taps.attach(limit=5, room=2), taps.attach(limit=100, room=100)
    for n in range(10):
        taps.offer(n)
    assert (small.accepted, small.dropped) == (2, 8) and big.accepted == 10
    assert await small.take() == [0, 1]
    taps.offer(10)
    taps.end()
    assert await small.take() == [10] and await small.take() == []  # closed: ends after what it held
    taps.detach(small)
    assert taps.totals() == (1, 3, 8)
    assert await big.take() == [*range(11)] and await big.take() == []


async def test_a_tap_takes_no_more_than_its_limit():
    taps = NodeTaps()
    tap = taps.attach(limit=3)
    for n in range(10):
        taps.offer(n)
    assert await tap.take() == [0, 1, 2] and tap.dropped == 0  # past the limit: not taken, not dropped
    assert await tap.take() == []


def test_a_port_in_use_stops_the_run_before_it_starts(tmp_path):
    path = graph(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*FLOW, "run", path.name, "--out", "o", "--status-port", str(port)],
            cwd=tmp_path, capture_output=True, text=True, timeout=30, env=ENV,
        )  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"flow: error: --status-port {port}: cannot listen on 127.0.0.1: ")
    assert not (tmp_path / "o" / "run.json").exists()
