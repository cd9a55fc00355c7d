"""The vendor mocks: sync answers and their determinism, 400s, faults and the
rate limit judged by the server's own log, async callbacks signed, retried,
duplicated and lost as configured, idempotent repeats, ground truth, and a
shutdown that leaves no callback behind. Delays run on virtual time."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

import aiohttp
import msgspec
import pytest
from aiohttp import web

from flow.testing import run_virtual
from mocks import (
    STYLES,
    VENDOR_STYLES,
    LoopClock,
    ManualClock,
    ServerSpec,
    VendorServer,
    callback_signature,
    serve,
    windows_over_limit,
)
from mocks.__main__ import build_parser
from mocks._spec import Style
from mocks.vendors import CALLBACK_ATTEMPTS, CALLBACK_BACKOFF, vendor_records

ROOT = Path(__file__).resolve().parents[2]
CUSTOMER = {"id", "name", "email", "phone", "score"}


class Receiver:
    """A webhook on loopback: keeps every POST as (loop time, headers, raw
    body) and answers with `statuses` in turn, then 200."""

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        self.statuses = list(statuses)
        self.got: list[tuple[float, dict[str, str], bytes]] = []

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        self.got.append((asyncio.get_running_loop().time(), dict(request.headers), await request.read()))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.json_response({"received": status < 300}, status=status)

    async def __aenter__(self) -> Receiver:
        self._runner = web.ServerRunner(web.Server(self._handle), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hooks/vendor"  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.cleanup()

    def bodies(self) -> list[dict[str, Any]]:
        return [msgspec.json.decode(body) for _, _, body in self.got]


@pytest.fixture
def start_vendor(start_mock: Any) -> Any:
    """`await start_vendor(style=..., clock=..., **fields)`: conftest's start_mock, named `acme`."""

    async def start(*, name: str = "acme", **fields: Any) -> Any:
        return await start_mock(name=name, **fields)

    return start


async def post(http: Any, url: str, body: Any, **kw: Any) -> tuple[int, Any, Any]:
    async with http.post(url, json=body, **kw) as response:
        return response.status, await response.json(content_type=None), response.headers


def job(rid: str, payload: Any = None, callback_url: str | None = None) -> dict[str, Any]:
    body = {"request_id": rid, "payload": {"customer": rid} if payload is None else payload}
    return body if callback_url is None else {**body, "callback_url": callback_url}


def verified(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a webhook receiver does: recompute the HMAC and compare in constant time."""
    mac = hmac.new(secret.encode(), f"{headers['X-Flow-Timestamp']}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest("sha256=" + mac.hexdigest(), headers["X-Flow-Signature"])


# --- styles and spec -------------------------------------------------------------
def test_the_style_lists_agree():
    assert get_args(Style) == (*STYLES, *VENDOR_STYLES)
    choices = next(a.choices for a in build_parser()._actions if a.dest == "style")
    assert tuple(choices) == (*STYLES, *VENDOR_STYLES)


def test_vendor_options_are_checked_with_their_name():
    with pytest.raises(ValueError, match="callback_delay: expected a duration"):
        ServerSpec(style="async_vendor", callback_delay="soon")
    with pytest.raises(ValueError, match="callback_duplicate_rate \\+ callback_loss_rate must be <= 1"):
        ServerSpec(style="async_vendor", callback_duplicate_rate=0.6, callback_loss_rate=0.6)
    with pytest.raises(ValueError, match="is not a vendor"):
        VendorServer(ServerSpec(style="dummyjson"))


# --- sync vendor ---------------------------------------------------------------------
async def test_sync_vendor_answers_with_customer_records(http, start_vendor):
    vendor = await start_vendor(style="sync_vendor")
    assert vendor.api_url == vendor.url + "/v1/process"
    status, body, _ = await post(http, vendor.api_url, job("r-1", {"customer": "c-17"}))
    assert status == 200
    assert set(body) == {"request_id", "vendor", "status", "result"}
    assert (body["request_id"], body["vendor"], body["status"]) == ("r-1", "acme", "complete")
    assert set(body["result"]) == {"records", "processed_at"}
    records = body["result"]["records"]
    assert 1 <= len(records) <= 3 and all(set(r) == CUSTOMER for r in records)
    assert records == vendor_records({"customer": "c-17"}, seed=0)
    assert datetime.fromisoformat(body["result"]["processed_at"]).utcoffset().total_seconds() == 0


def test_records_are_a_function_of_payload_and_seed():
    payloads = [{"customer": f"c-{i}"} for i in range(60)]
    made = [vendor_records(p, seed=3) for p in payloads]
    assert made == [vendor_records(p, seed=3) for p in payloads]
    assert made != [vendor_records(p, seed=4) for p in payloads]
    customers = [r for records in made for r in records]
    assert {len(records) for records in made} == {1, 2, 3}
    # Personal data, and some of it untidy: what a service's cleaning is for.
    assert all("@" in r["email"] and re.search(r"\d{4}$", r["phone"]) for r in customers)
    assert any(r["name"] != r["name"].strip() for r in customers)
    assert any(r["email"] != r["email"].lower() for r in customers)
    assert all(0.0 <= r["score"] <= 1.0 for r in customers)


def test_records_in_the_payload_are_echoed_with_a_score():
    given = [{"name": "  Ana García ", "email": "Ana@Example.com"}, {"name": "Jun Sato", "phone": "555-0100"}]
    records = vendor_records({"records": given, "other": 1}, seed=0)
    assert [{k: v for k, v in r.items() if k != "score"} for r in records] == given
    assert records == vendor_records({"records": given}, seed=0)  # each from its own content
    assert vendor_records({"records": [7]}, seed=0)[0]["value"] == 7


async def test_failed_jobs_are_answered_200_with_a_reason(http, start_vendor):
    vendor = await start_vendor(style="sync_vendor", failure_rate=1.0)
    status, body, _ = await post(http, vendor.api_url, job("r-1"))
    assert status == 200
    assert (body["status"], body["result"], set(body)) == ("failed", None, {"request_id", "vendor", "status",
                                                                             "result", "error"})  # fmt: skip
    assert isinstance(body["error"], str) and body["error"]
    share = await start_vendor(style="sync_vendor", failure_rate=0.3)
    statuses = Counter([(await post(http, share.api_url, job(f"r-{i}")))[1]["status"] for i in range(80)])
    assert 10 <= statuses["failed"] <= 40 and share.stats()["counts"]["failed"] == statuses["failed"]


@pytest.mark.parametrize(
    "body,message",
    [
        (b"{", "bad job: Input data was truncated"),
        (b"[]", "bad job: Expected `object`, got `array`"),
        (b'{"payload": {}}', "bad job: Object missing required field `request_id`"),
        (b'{"request_id": "", "payload": {}}', "bad job: Expected `str` of length >= 1 - at `$.request_id`"),
        (b'{"request_id": "r"}', "bad job: Object missing required field `payload`"),
        (b'{"request_id": "r", "payload": [1]}', "bad job: Expected `object`, got `array` - at `$.payload`"),
    ],
)
async def test_malformed_jobs_get_400_with_a_json_error(http, start_vendor, body, message):
    vendor = await start_vendor(style="sync_vendor")
    async with http.post(vendor.api_url, data=body, headers={"Content-Type": "application/json"}) as response:
        assert (response.status, await response.json()) == (400, {"error": message})
    stats = vendor.stats()
    assert stats["requests"][0]["fault"] == "bad_request" and stats["counts"]["jobs"] == 0


async def test_routes_methods_and_keys(http, start_vendor):
    vendor = await start_vendor(style="sync_vendor", api_key="k-1")
    assert (await post(http, vendor.url + "/v1/jobs", job("r")))[0] == 404
    async with http.get(vendor.api_url) as response:
        assert (response.status, response.headers["Allow"]) == (405, "POST")
    assert (await post(http, vendor.api_url, job("r")))[0] == 401
    assert (await post(http, vendor.api_url, job("r"), headers={"x-api-key": "k-1"}))[0] == 200
    assert [e["fault"] for e in vendor.stats()["requests"]] == [
        "not_found",
        "bad_method",
        "unauthorized",
        None,
    ]


async def test_a_repeated_request_id_gets_the_same_answer(http, start_vendor):
    vendor = await start_vendor(style="sync_vendor")
    first = await post(http, vendor.api_url, job("r-1", {"customer": "a"}))
    again = await post(http, vendor.api_url, job("r-1", {"customer": "b"}))  # the id decides
    assert first[1] == again[1]
    counts = vendor.stats()["counts"]
    assert (counts["jobs"], counts["repeats"], vendor.stats()["jobs"][0]["repeats"]) == (1, 1, 1)


async def test_faults_follow_the_seed_whatever_the_order(http, start_vendor):
    rids = [f"r-{i}" for i in range(24)]
    one = await start_vendor(style="sync_vendor", error_rate=0.5, seed=5)
    other = await start_vendor(style="sync_vendor", error_rate=0.5, seed=5)
    seen = {rid: (await post(http, one.api_url, job(rid)))[0] for rid in rids}
    assert {rid: (await post(http, other.api_url, job(rid)))[0] for rid in reversed(rids)} == seen
    assert {200, 500, 502, 503} >= set(seen.values()) and len(set(seen.values())) > 1
    assert one.stats()["counts"]["jobs"] == sum(status == 200 for status in seen.values())


async def test_a_truncated_answer_still_made_the_job(http, start_vendor):
    vendor = await start_vendor(style="sync_vendor", truncate_rate=1.0)
    for _ in range(2):
        async with http.post(vendor.api_url, json=job("r-1")) as response:
            assert response.status == 200
            with pytest.raises(msgspec.DecodeError):
                msgspec.json.decode(await response.read())
    assert (vendor.stats()["counts"]["jobs"], vendor.stats()["counts"]["repeats"]) == (1, 1)


async def test_latency_and_hangs_on_virtual_time(http, start_vendor):
    clock = ManualClock()
    vendor = await start_vendor(style="sync_vendor", latency="100ms", hang_rate=1.0, hang="30s", clock=clock)
    assert (await post(http, vendor.api_url, job("r-1")))[0] == 200
    assert clock.slept == [30.0] and vendor.stats()["requests"][0]["fault"] == "hang"


async def test_a_burst_meets_429_and_no_window_holds_more_than_the_limit(http, start_vendor):
    clock = ManualClock()
    vendor = await start_vendor(style="sync_vendor", rate_limit="5/s", clock=clock)
    burst = await asyncio.gather(*(post(http, vendor.api_url, job(f"r-{i}")) for i in range(8)))
    assert sorted(status for status, _, _ in burst) == [200] * 5 + [429] * 3
    refused = next(r for r in burst if r[0] == 429)
    assert refused[2]["Retry-After"] == "1" and "at most 5 per 1s" in refused[1]["error"]
    clock.advance(0.5)
    assert (await post(http, vendor.api_url, job("r-8")))[0] == 429  # 8 arrivals in (t - 1 s, t]
    clock.advance(0.5)
    assert (await post(http, vendor.api_url, job("r-9")))[0] == 200  # the burst at 0 has left it
    log = vendor.stats()["requests"]
    assert windows_over_limit([e["t"] for e in log if e["status"] != 429], 5) == []
    assert [e["t"] for e in log if e["status"] == 429] == [0.0] * 3 + [0.5]
    assert vendor.stats()["counts"]["by_fault"] == {"rate_limited": 4}


# --- async vendor --------------------------------------------------------------------
async def test_async_vendor_accepts_then_posts_a_signed_callback(http, start_vendor):
    vendor = await start_vendor(style="async_vendor", secret="s3cret", clock=ManualClock())
    assert vendor.api_url == vendor.url + "/v1/jobs"
    async with Receiver() as receiver:
        status, body, _ = await post(http, vendor.api_url, job("r-1", {"customer": "c-9"}, receiver.url))
        assert status == 202 and set(body) == {"request_id", "vendor_job_id"} and body["request_id"] == "r-1"
        await vendor.drain()
    [(_, headers, raw)] = receiver.got
    assert headers["Content-Type"] == "application/json" and headers["X-Flow-Timestamp"].isdigit()
    assert verified("s3cret", headers, raw) and not verified("other", headers, raw)
    assert headers["X-Flow-Signature"] == callback_signature("s3cret", headers["X-Flow-Timestamp"], raw)
    callback = msgspec.json.decode(raw)
    assert callback == {
        "request_id": "r-1",
        "vendor_job_id": body["vendor_job_id"],
        "vendor": "acme",
        "status": "complete",
        "result": {
            "records": vendor_records({"customer": "c-9"}),
            "processed_at": callback["result"]["processed_at"],
        },
        "error": None,
    }
    assert vendor.stats()["counts"]["callbacks"] == {
        "scheduled": 1, "duplicated": 0, "lost": 0, "copies": 1, "attempts": 1,
        "pending": 0, "delivered": 1, "refused": 0, "gave_up": 0, "cancelled": 0,
    }  # fmt: skip


async def test_a_failed_job_is_called_back_failed(http, start_vendor):
    vendor = await start_vendor(style="async_vendor", failure_rate=1.0, clock=ManualClock())
    async with Receiver() as receiver:
        await post(http, vendor.api_url, job("r-1", callback_url=receiver.url))
        await vendor.drain()
    [callback] = receiver.bodies()
    assert (callback["status"], callback["result"]) == ("failed", None) and callback["error"]


def test_the_callback_waits_its_delay_on_virtual_time():
    async def main() -> tuple[float, float, dict[str, Any]]:
        spec = ServerSpec(style="async_vendor", rate_limit="off", callback_delay="2s..3s")
        async with VendorServer(spec, clock=LoopClock()) as vendor, Receiver() as receiver:
            async with aiohttp.ClientSession() as http:
                sent = asyncio.get_running_loop().time()
                assert (await post(http, vendor.api_url, job("r-1", callback_url=receiver.url)))[0] == 202
            await vendor.drain()
            return sent, receiver.got[0][0], vendor.stats()["jobs"][0]

    sent, arrived, row = run_virtual(main())
    assert 2.0 <= row["delay"] <= 3.0
    assert arrived - sent == pytest.approx(row["delay"], abs=0.05)


def test_callbacks_are_retried_after_5xx_and_errors_with_backoff_but_not_after_4xx():
    async def main() -> dict[str, Any]:
        spec = ServerSpec(style="async_vendor", rate_limit="off", callback_delay="1s")
        async with VendorServer(spec, clock=LoopClock()) as vendor, Receiver((503, 502)) as flaky:
            async with Receiver((400,)) as strict, aiohttp.ClientSession() as http:
                await post(http, vendor.api_url, job("flaky", callback_url=flaky.url))
                await post(http, vendor.api_url, job("strict", callback_url=strict.url))
                await post(http, vendor.api_url, job("gone", callback_url="http://127.0.0.1:9/nobody"))
                await vendor.drain()
            return vendor.stats()

    stats = run_virtual(main())
    flaky, strict, gone = stats["callbacks"]
    assert [a["status"] for a in flaky["attempts"]] == [503, 502, 200] and flaky["outcome"] == "delivered"
    gaps = [b["t"] - a["t"] for a, b in zip(flaky["attempts"], flaky["attempts"][1:], strict=False)]
    assert gaps == pytest.approx([CALLBACK_BACKOFF, 2 * CALLBACK_BACKOFF], abs=0.05)
    assert [a["status"] for a in strict["attempts"]] == [400] and strict["outcome"] == "refused"
    assert len(gone["attempts"]) == CALLBACK_ATTEMPTS and gone["outcome"] == "gave_up"
    assert all(a["status"] is None and "ClientConnectorError" in a["error"] for a in gone["attempts"])
    assert stats["counts"]["callbacks"]["attempts"] == 3 + 1 + CALLBACK_ATTEMPTS


async def test_duplicates_and_losses_come_at_their_rates(http, start_vendor):
    vendor = await start_vendor(
        style="async_vendor", callback_duplicate_rate=0.3, callback_loss_rate=0.2, clock=ManualClock()
    )
    async with Receiver() as receiver:
        for i in range(120):
            assert (await post(http, vendor.api_url, job(f"r-{i}", callback_url=receiver.url)))[0] == 202
        await vendor.drain()
    copies: dict[str, list[tuple[str, bytes]]] = {}
    for _, headers, raw in receiver.got:
        copies.setdefault(msgspec.json.decode(raw)["request_id"], []).append(
            (headers["X-Flow-Signature"], raw)
        )
    twice = [rid for rid, sent in copies.items() if len(sent) == 2]
    assert all(
        sent[0] == sent[1] for rid, sent in copies.items() if rid in twice
    )  # same body, same signature
    assert {len(sent) for sent in copies.values()} <= {1, 2}
    counts = vendor.stats()["counts"]["callbacks"]
    assert counts["lost"] == 120 - len(copies) and counts["duplicated"] == len(twice)
    assert 10 <= counts["lost"] <= 40 and 18 <= counts["duplicated"] <= 55  # 24 and 36 expected
    assert counts["delivered"] == len(receiver.got) == counts["copies"]
    lost = {row["request_id"] for row in vendor.stats()["jobs"] if row["callback"] == "lost"}
    assert lost.isdisjoint(copies) and len(lost) == counts["lost"]


@pytest.mark.parametrize(
    "url",
    ["http://example.com/hook", "https://127.0.0.1/hook", "http://10.0.0.1/hook", "ftp://localhost/x", None],
)
async def test_callbacks_only_go_to_loopback(http, start_vendor, url):
    vendor = await start_vendor(style="async_vendor", clock=ManualClock())
    status, body, _ = await post(http, vendor.api_url, job("r-1", callback_url=url))
    assert (
        status == 400 and "callback_url must be http://127.0.0.1... or http://localhost..." in body["error"]
    )
    assert vendor.stats()["counts"]["jobs"] == 0 and vendor.stats()["callbacks"] == []


async def test_a_repeated_job_is_one_job_and_one_callback(http, start_vendor):
    vendor = await start_vendor(style="async_vendor", clock=ManualClock())
    async with Receiver() as receiver:
        first = await post(http, vendor.api_url, job("r-1", callback_url=receiver.url))
        again = await post(http, vendor.api_url, job("r-1", callback_url=receiver.url))
        await vendor.drain()
    assert first[1] == again[1] and first[0] == again[0] == 202
    assert len(receiver.got) == 1
    counts = vendor.stats()["counts"]
    assert (counts["jobs"], counts["repeats"], counts["callbacks"]["copies"]) == (1, 1, 1)


# --- ground truth and shutdown -------------------------------------------------------
async def test_stats_and_reset_over_http(http, start_vendor):
    vendor = await start_vendor(style="sync_vendor", rate_limit="2/s", clock=ManualClock())
    for i in range(3):
        await post(http, vendor.api_url, job(f"r-{i}"))
    async with http.get(vendor.url + "/__stats") as response:
        stats = await response.json()
    assert stats["server"]["style"] == "sync_vendor" and stats["server"]["path"] == "/v1/process"
    assert stats["counts"]["by_status"] == {"200": 2, "429": 1} and stats["counts"]["jobs"] == 2
    assert [e["request_id"] for e in stats["requests"]] == ["r-0", "r-1", "r-2"]
    assert set(stats["requests"][0]) == {"t", "method", "path", "request_id", "status", "fault", "latency"}
    assert [row["request_id"] for row in stats["jobs"]] == ["r-0", "r-1"]
    async with http.get(vendor.url + "/__stats?summary=1") as response:
        assert set(await response.json()) == {"server", "counts"}
    async with http.post(vendor.url + "/__reset") as response:
        assert response.status == 200
    after = vendor.stats()
    assert after["requests"] == [] and after["jobs"] == [] and after["counts"]["repeats"] == 0
    assert (await post(http, vendor.api_url, job("r-0")))[0] == 200  # the limiter's window is forgotten too
    assert vendor.stats()["counts"]["repeats"] == 0  # and so are the jobs


async def test_closing_cancels_pending_callbacks_and_leaves_no_task(http):
    spec = ServerSpec(style="async_vendor", rate_limit="off", callback_delay="30s")
    async with Receiver() as receiver:
        async with serve({"slow": spec}) as servers:  # real time: the callbacks are 30 s away
            vendor = servers["slow"]
            for i in range(3):
                assert (await post(http, vendor.api_url, job(f"r-{i}", callback_url=receiver.url)))[0] == 202
            assert vendor.stats()["counts"]["callbacks"]["pending"] == 3
        await asyncio.sleep(0)
    assert receiver.got == []
    assert vendor.stats()["counts"]["callbacks"]["cancelled"] == 3
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("callback ")] == []
    assert repr(vendor).startswith("<VendorServer slow async_vendor stopped")


async def test_reset_cancels_pending_callbacks(http, start_vendor):
    vendor = await start_vendor(style="async_vendor", callback_delay="30s")
    async with Receiver() as receiver:
        await post(http, vendor.api_url, job("r-1", callback_url=receiver.url))
        [delivery] = vendor.callbacks
        vendor.reset()
        await vendor.drain()
    assert delivery.outcome == "cancelled" and vendor.callbacks == [] and receiver.got == []


def test_flow_mocks_serves_both_vendors_until_sigint():
    proc = subprocess.Popen(
        [sys.executable, "-m", "flow", "mocks", "--style", "sync_vendor", "--style", "async_vendor",
         "--rate-limit", "off"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            if line.startswith("serving"):
                break
            lines.append(line)
        urls = [re.search(r"(http://127\.0\.0\.1:\d+/\S*)", line)[1] for line in lines]  # type: ignore[index]
        assert [url.rsplit(":", 1)[1].split("/", 1)[1] for url in urls] == ["v1/process", "v1/jobs"]
        assert "sync_vendor" in lines[0] and "async_vendor" in lines[1] and "a vendor" in lines[0]
        request = urllib.request.Request(urls[0], data=msgspec.json.encode(job("r-1")), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert msgspec.json.decode(response.read())["status"] == "complete"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0 and out.strip().endswith("stopped") and "Traceback" not in err
