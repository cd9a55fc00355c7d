"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from mocks import MockServer, ServerSpec, make_server

StartServer = Callable[..., Awaitable[MockServer]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session; aiohttp's silent resend of idempotent requests after a
    connection error is switched off so that every request the test makes is
    exactly one request in the server's log."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        session._retry_connection = False  # private, but the only switch there is
        yield session


@pytest.fixture
async def start_mock() -> AsyncIterator[StartServer]:
    """`await start_mock(style=..., products=..., clock=...)` starts a mock server
    (a catalogue API or a vendor, by its style) on an ephemeral loopback port;
    every server started is closed afterwards."""
    servers: list[Any] = []

    async def start(*, clock: Any = None, name: str = "mock", **fields: Any) -> Any:
        fields.setdefault("rate_limit", "off")
        server = make_server(ServerSpec(**fields), name=name, clock=clock)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


def ledger_problems(runtime: Any, result: Any) -> list[str]:
    """The ledger's equations on a finished run (flow.ledger): every count
    non-negative, nothing counted twice (in any run) and, unless a stage
    raised or the run was cut short, nothing unaccounted for: every page and
    record ended somewhere a stage counted."""
    problems = []
    for source, row in result.ledger.items():
        pages, records = row["pages"], row["records"]
        counts = [v for k, v in pages.items() if k not in ("unaccounted", "failed_by_reason")]
        counts += [records[k] for k in ("received", "dead_letters", "duplicates", "filtered")]
        counts += list(records["written"].values()) + list(pages["failed_by_reason"].values())
        if any(n < 0 for n in counts):
            problems.append(f"{source}: a negative count in {row}")
        if sum(pages["failed_by_reason"].values()) != pages["failed"]:
            problems.append(f"{source}: failed pages by reason do not sum to the failed pages: {pages}")
        if pages["unaccounted"] < 0 or any(n < 0 for n in records["unaccounted"].values()):
            problems.append(f"{source}: counted twice (unaccounted below 0): {row}")
        exact = result.status == "completed" and not runtime.resources.raised
        if exact and (pages["unaccounted"] or any(records["unaccounted"].values())):
            problems.append(f"{source}: unaccounted for in a completed run: {row}")
    return problems


@pytest.fixture(autouse=True)
def _every_run_balances(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Every graph run in the suite (through flow.runtime.Runtime) has its
    ledger checked: the equations hold on every run, not only where a test
    looks at them. A test marked `loses_records` must see a loss instead."""
    from flow.runtime import Runtime

    run = Runtime.run
    loses = request.node.get_closest_marker("loses_records") is not None

    async def checked(self: Runtime) -> Any:
        result = await run(self)
        problems = ledger_problems(self, result)
        if loses:
            assert problems and result.exit_code() == 1, "a run meant to lose records balanced"
        else:
            assert not problems, "the ledger does not balance:\n" + "\n".join(problems)
        return result

    monkeypatch.setattr(Runtime, "run", checked)
