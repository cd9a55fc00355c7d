"""A real headless browser (Debian's chromium, `.ci/chromium`) for the report:
the DOM it builds of a page and the console messages it logs, a screenshot.

Chromium runs as a subprocess, driven over the DevTools protocol (aiohttp's
WebSocket client) on 127.0.0.1, with the page's JavaScript on or off; it is
started with background networking off, and the page is self-contained (its
Content-Security-Policy allows no script and no fetch), so nothing leaves the
machine.

    python tests/browser.py --run graph.yaml --out docs/report.png
        runs the graph (its report sink writes OUT/report.html) and saves a
        screenshot of the report: `make screenshot`, the README's picture.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[1]


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("no chromium on PATH: run .ci/chromium (apt-get install -y chromium)")


@dataclass
class Rendered:
    dom: str  # the document as the browser built it
    console: list[str]  # what the page logged: console calls, exceptions, browser log entries


def render(page: Path, *, scripts: bool = True, screenshot: Path | None = None, width: int = 1100,
           height: int = 2400) -> Rendered:  # fmt: skip
    """Load `page` (a file) in headless chromium, JavaScript on or off
    (DevTools' Emulation.setScriptExecutionDisabled: the page's scripts do
    not run, the browser's own inspection does): its DOM and its console;
    with `screenshot`, a PNG of the first `height` pixels too."""
    return asyncio.run(asyncio.wait_for(_render(page.resolve(), scripts, screenshot, width, height), 120))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def _render(page: Path, scripts: bool, screenshot: Path | None, width: int, height: int) -> Rendered:
    import aiohttp

    with tempfile.TemporaryDirectory(prefix="flow-browser-") as profile:
        browser = await asyncio.create_subprocess_exec(
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--disable-background-networking", f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0", f"--window-size={width},{height}", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env={**os.environ, "HOME": profile},
            start_new_session=True,  # its own process group: its helpers end with it
        )  # fmt: skip
        drain = None
        try:
            url = await _devtools_url(browser)
            drain = asyncio.create_task(_drain(browser))  # a full pipe would block the browser
            async with aiohttp.ClientSession() as session, session.ws_connect(url, max_msg_size=0) as ws:
                return await _Tab(ws).load(page, scripts, screenshot, width, height)
        finally:
            await _stop(browser)
            if drain is not None:
                drain.cancel()
                await asyncio.gather(drain, return_exceptions=True)


async def _drain(browser: asyncio.subprocess.Process) -> None:
    assert browser.stderr is not None
    while await browser.stderr.read(65536):
        pass


async def _stop(browser: asyncio.subprocess.Process) -> None:
    """End the browser's process group: politely, then for good after 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(browser.pid, sig)
        try:
            await asyncio.wait_for(asyncio.shield(browser.wait()), 10)
            return
        except TimeoutError:
            continue


async def _devtools_url(browser: asyncio.subprocess.Process) -> str:
    assert browser.stderr is not None
    while line := (await browser.stderr.readline()).decode():
        if "DevTools listening on " in line:
            return line.split("DevTools listening on ", 1)[1].strip()
    raise RuntimeError("chromium exited before it listened for DevTools")


class _Tab:
    """One page over the DevTools protocol (flat sessions)."""

    def __init__(self, ws: Any) -> None:
        self.ws, self.ids, self.session = ws, 0, None
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.ids += 1
        message: dict[str, Any] = {"id": self.ids, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        await self.ws.send_json(message)
        while True:
            answer = await self.ws.receive_json()
            if answer.get("id") == self.ids:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    async def until(self, method: str) -> None:
        while not any(e.get("method") == method for e in self.events):
            self.events.append(await self.ws.receive_json())

    async def load(self, page: Path, scripts: bool, screenshot: Path | None, width: int, height: int) -> Rendered:
        target = (await self.call("Target.createTarget", url="about:blank"))["targetId"]
        self.session = (await self.call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            await self.call(f"{domain}.enable")
        await self.call("Emulation.setScriptExecutionDisabled", value=not scripts)
        await self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                        mobile=False)  # fmt: skip
        self.events.clear()  # the load that counts is the one after this navigation
        await self.call("Page.navigate", url=page.as_uri())
        await self.until("Page.loadEventFired")
        root = (await self.call("DOM.getDocument", depth=-1))["root"]
        dom = (await self.call("DOM.getOuterHTML", nodeId=root["nodeId"]))["outerHTML"]
        if screenshot is not None:
            shot = await self.call("Page.captureScreenshot", format="png")
            _write(screenshot, base64.b64decode(shot["data"]))
        logged = ("Runtime.consoleAPICalled", "Runtime.exceptionThrown", "Log.entryAdded")
        return Rendered(dom, [json.dumps(e["params"])[:500] for e in self.events if e.get("method") in logged])


def main() -> int:
    parser = argparse.ArgumentParser(description="screenshot the report of a graph's run")
    parser.add_argument("--run", required=True, metavar="GRAPH")
    parser.add_argument("--out", required=True, metavar="PNG")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flow-report-") as tmp:
        command = [sys.executable, "-m", "flow", "run", args.run, "--out", tmp, "-q"]
        if subprocess.run(command, cwd=ROOT).returncode != 0:
            return 1
        render(Path(tmp) / "report.html", scripts=False, screenshot=Path(args.out), height=2200)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
