"""HTTPS with the CA store loaded at the first handshake (flow/_tls.py).

aiohttp loads the system CA store twice as it is imported; flow defers that
load to the first TLS handshake. These tests prove the deferral happens and
that certificate checks stay on: `flow run` against a loopback HTTPS API
whose certificate is signed by a throwaway CA (trustme) fetches every record
when SSL_CERT_FILE names that CA, and fetches nothing (the server sees no
request, the run exits non-zero) when it names another CA.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from flow._tls import import_deferring_ca_store
from tests.loopback import PagedAPI

ROOT = Path(__file__).parents[3]
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FLOW__", "SSL_CERT_"))}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def module_with_contexts(tmp_path: Path) -> Iterator[str]:
    """A module that, like aiohttp.connector, builds a verifying and a
    non-verifying client context as it is imported."""
    (tmp_path / "builds_contexts.py").write_text(
        textwrap.dedent(
            """
            import ssl
            VERIFYING = ssl.create_default_context()
            PLAIN = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            PLAIN.check_hostname = False
            PLAIN.verify_mode = ssl.CERT_NONE
            PLAIN.set_default_verify_paths()
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield "builds_contexts"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("builds_contexts", None)


def _cas(context: ssl.SSLContext) -> int:
    return context.cert_store_stats()["x509_ca"]


def test_the_store_loads_at_the_first_handshake_and_from_the_environment_then(
    module_with_contexts: str, ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = import_deferring_ca_store(module_with_contexts)
    assert "set_default_verify_paths" not in vars(ssl.SSLContext)  # the C method again
    assert _cas(module.VERIFYING) == 0 and _cas(module.PLAIN) == 0
    assert module.VERIFYING.verify_mode == ssl.CERT_REQUIRED and module.VERIFYING.check_hostname
    # The load reads SSL_CERT_FILE when it happens, as it would have at import.
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    module.VERIFYING.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="127.0.0.1")
    assert _cas(module.VERIFYING) == 1  # exactly the CA named, loaded once
    assert "wrap_bio" not in vars(module.VERIFYING) and "wrap_socket" not in vars(module.VERIFYING)
    module.VERIFYING.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="127.0.0.1")
    assert _cas(module.VERIFYING) == 1
    assert _cas(module.PLAIN) == 0  # it verifies nothing: nothing to load


@pytest.fixture
def modules(tmp_path: Path) -> Iterator[Path]:
    """A folder on sys.path for throwaway modules, forgotten afterwards."""
    folder = tmp_path / "modules"
    folder.mkdir()
    sys.path.insert(0, str(folder))
    before = set(sys.modules)
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        for name in set(sys.modules) - before:
            del sys.modules[name]


def _deferred(context: ssl.SSLContext) -> bool:
    return "wrap_bio" in vars(context) and _cas(context) == 0


def test_a_nested_call_leaves_the_outer_one_in_charge(modules: Path) -> None:
    (modules / "inner_contexts.py").write_text("import ssl\nCONTEXT = ssl.create_default_context()\n")
    (modules / "outer_contexts.py").write_text(
        "import ssl\n"
        "from flow._tls import import_deferring_ca_store\n"
        "INNER = import_deferring_ca_store('inner_contexts')\n"
        "STILL_PATCHED = 'set_default_verify_paths' in vars(ssl.SSLContext)\n"
        "OUTER = ssl.create_default_context()\n"
    )
    module = import_deferring_ca_store("outer_contexts")
    assert module.STILL_PATCHED  # the inner call neither patched again nor restored early
    assert _deferred(module.INNER.CONTEXT) and _deferred(module.OUTER)
    assert "set_default_verify_paths" not in vars(ssl.SSLContext)


def test_a_failed_import_still_settles_the_contexts_it_built(
    modules: Path, ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (modules / "broken").mkdir()
    (modules / "broken" / "part.py").write_text("import ssl\nCONTEXT = ssl.create_default_context()\n")
    (modules / "broken" / "__init__.py").write_text("from . import part\nraise RuntimeError('boom')\n")
    with pytest.raises(RuntimeError, match="boom"):
        import_deferring_ca_store("broken")
    assert "set_default_verify_paths" not in vars(ssl.SSLContext)
    context = sys.modules["broken.part"].CONTEXT  # left behind, as a failed import leaves it
    assert _deferred(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="127.0.0.1")
    assert _cas(context) == 1


def test_the_http_stages_import_aiohttp_without_loading_the_store() -> None:
    probe = (
        "import ssl, stages.http.fetcher, aiohttp.connector as c; "
        "print(c._SSL_CONTEXT_VERIFIED.cert_store_stats()['x509_ca'], "
        "c._SSL_CONTEXT_UNVERIFIED.cert_store_stats()['x509_ca'], "
        "'wrap_bio' in vars(c._SSL_CONTEXT_VERIFIED), 'wrap_bio' in vars(c._SSL_CONTEXT_UNVERIFIED), "
        "'set_default_verify_paths' in vars(ssl.SSLContext))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # Nothing loaded; the verifying context loads at its first handshake, the other never.
    assert done.stdout.split() == ["0", "0", "True", "False", "False"]


GRAPH = """\
version: 1
run: {{deadline: 30s, out: {out}}}
nodes:
  shop:
    pipe:
      - paginate: {{url: "{url}", style: skip_limit, page_size: 50}}
      - fetch: {{timeout: 5s, retry: {{retries: 1, backoff: 0.1s}}}}
      - parse: {{schema: dummyjson}}
      - normalize: {{preset: dummyjson}}
  report:
    from: [shop, "*.errors", "*.dead_letters"]
    pipe: [{{summary_json: {{path: summary.json}}}}]
"""


async def _flow_run_over_https(
    ca_file: Path, server_ca: trustme.CA, tmp_path: Path
) -> tuple[int, str, dict, PagedAPI]:
    """`flow run` in a fresh interpreter, SSL_CERT_FILE=`ca_file`, against a
    loopback HTTPS API whose certificate `server_ca` signed."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ca.issue_cert("127.0.0.1").configure_cert(tls)
    api = PagedAPI("skip_limit", 120)
    url = await api.start(tls)
    try:
        out = tmp_path / "out"
        (tmp_path / "graph.yaml").write_text(GRAPH.format(out=out, url=url))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "flow", "run", str(tmp_path / "graph.yaml"), "-q", "--no-progress",
            cwd=ROOT, env={**ENV, "SSL_CERT_FILE": str(ca_file)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
        report = json.loads((out / "run.json").read_text())
        return process.returncode or 0, stderr.decode(), report, api
    finally:
        await api.close()


async def test_flow_run_fetches_over_https_from_a_server_the_named_ca_signed(
    ca: trustme.CA, tmp_path: Path
) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    code, stderr, report, api = await _flow_run_over_https(tmp_path / "ca.pem", ca, tmp_path)
    assert code == 0, stderr
    ledger = report["ledger"]["shop"]
    assert ledger["records"]["received"] == 120 and ledger["pages"]["failed"] == 0
    assert api.served == api.held


async def test_flow_run_refuses_a_certificate_no_trusted_ca_signed(ca: trustme.CA, tmp_path: Path) -> None:
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "other.pem"))  # trusted: some other CA
    code, _, report, api = await _flow_run_over_https(tmp_path / "other.pem", ca, tmp_path)
    assert code != 0
    assert api.log == []  # the handshake failed: not one request reached the server
    ledger = report["ledger"]["shop"]
    assert ledger["records"]["received"] == 0
    assert ledger["pages"]["failed_by_reason"] == {"tls_certificate": 1}  # not retried: it would fail alike
    (failure,) = [e for e in report["errors"] if e["stage"] == "fetch"]
    assert failure["attempts"] == 1 and "CERTIFICATE_VERIFY_FAILED" in failure["detail"]


def test_a_context_another_thread_builds_during_the_import_is_loaded_as_usual(
    modules: Path, ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    (modules / "threaded_contexts.py").write_text(
        "import ssl, threading\n"
        "OTHER = {}\n"
        "def build():\n"
        "    OTHER['context'] = ssl.create_default_context()\n"
        "worker = threading.Thread(target=build)\n"
        "worker.start()\n"
        "worker.join()\n"
        "MINE = ssl.create_default_context()\n"
    )
    module = import_deferring_ca_store("threaded_contexts")
    other, mine = module.OTHER["context"], module.MINE
    assert "wrap_bio" not in vars(other) and _cas(other) == 1  # loaded at once, from SSL_CERT_FILE
    assert _deferred(mine)  # only the importing thread's contexts wait for a handshake


async def test_a_refused_certificate_fails_the_fetch_at_once_and_counts_for_the_breaker(
    ca: trustme.CA,
) -> None:
    from stages.http.breaker import CircuitBreaker
    from stages.http.fetcher import Fetcher, FetchFailed
    from stages.http.session import make_session

    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)  # a CA this process does not trust
    api = PagedAPI("skip_limit", 40)
    url = await api.start(tls)
    try:
        async with make_session() as session:
            breaker = CircuitBreaker(failures=5)
            failed = await Fetcher(session, breaker=breaker).fetch(url)
    finally:
        await api.close()
    assert isinstance(failed, FetchFailed) and failed.error == "tls_certificate" and failed.attempts == 1
    assert "CERTIFICATE_VERIFY_FAILED" in failed.detail and api.log == []
    assert breaker._consecutive == 1  # a failure for the breaker, not a neutral answer
