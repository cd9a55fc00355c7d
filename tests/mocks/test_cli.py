"""`python -m mocks`: every option documented, one-line errors with exit 2,
servers that start from flags or a graph.yaml and stop cleanly on SIGINT."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import msgspec
import pytest

from mocks import ServerSpec
from mocks.__main__ import build_parser, specs_from_args

ROOT = Path(__file__).resolve().parents[2]
FLAG_OF = {"outages": "--outage"}


def run_mocks(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mocks", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def test_help_documents_every_server_option():
    text = build_parser().format_help()
    for field in ServerSpec.__struct_fields__:
        flag = FLAG_OF.get(field, "--" + field.replace("_", "-"))
        assert flag in text, f"{flag} ({field}) missing from --help"
    assert "--config" in text and "exit codes" in text


def test_help_exits_zero():
    result = run_mocks("--help")
    assert result.returncode == 0 and "usage: python -m mocks" in result.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--error-rate", "2"], "argument --error-rate: expected a share between 0 and 1, got '2'"),
        (["--rate-limit", "fast"], "argument --rate-limit: expected a rate such as '5/s'"),
        (["--style", "shopify"], "argument --style: invalid choice: 'shopify'"),
        (["--latency", "5xs"], "argument --latency: expected a duration such as '250ms'"),
        (["--products", "0"], "server 'dummyjson': Expected `int` >= 1 - at `$.products`"),
        (["--error-rate", "0.7", "--reset-rate", "0.7"], "fault rates add up to 1.400"),
        (["--config", "missing.yaml"], "missing.yaml: cannot read"),
    ],
)
def test_bad_options_get_one_line_and_exit_2(args, message):
    result = run_mocks(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "yaml_text,message",
    [
        (
            "mocks:\n  a: {style: dummyjson, error_rat: 0.1}\n",
            "cfg.yaml:2:25: unknown key 'error_rat'; hint: did you mean 'error_rate'?",
        ),
        ("mocks:\n  a:\n    products: nine\n", "cfg.yaml:3:15: expected `int`, got `str`"),
        (
            "mocks:\n  a: {style: shopify}\n",
            "cfg.yaml:2:14: invalid enum value 'shopify'; "
            "hint: choose one of: async_vendor, cursor, dummyjson, jsonserver, platzi, reqres, sync_vendor",
        ),
        (
            "mocks:\n  a: {latency: [\n",
            "cfg.yaml:3:1: invalid YAML: expected the node content, but found '<stream end>' "
            "(while parsing a flow node)",
        ),
        (
            "nodes: {}\n",
            "cfg.yaml: no 'mocks:' block; hint: declare servers as 'mocks: {shop_a: {style: dummyjson}}'",
        ),
        (
            "mocks: []\n",
            "cfg.yaml:1:8: 'mocks' must map server names to settings, e.g. 'shop_a: {style: dummyjson}'",
        ),
    ],
)
def test_config_errors_are_located(tmp_path, yaml_text, message):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml_text)
    result = run_mocks("--config", str(config))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"python -m mocks: error: {tmp_path}{os.sep}{message}"]


def test_flags_override_every_server_of_the_config():
    args = build_parser().parse_args(
        ["--config", str(ROOT / "graph.yaml"), "--rate-limit", "off", "--seed", "9"]
    )
    specs = specs_from_args(args)
    assert len(specs) >= 3
    assert {spec.rate_limit for spec in specs.values()} == {"off"}
    assert {spec.seed for spec in specs.values()} == {9}
    styles = {spec.style for spec in specs.values()}
    assert len(styles) >= 3  # the default graph mixes styles


def test_the_default_graph_declares_three_or_more_mocks_of_100_plus_products():
    from mocks._config import load_mocks

    specs = load_mocks(ROOT / "graph.yaml")
    assert len(specs) >= 3 and all(spec.products >= 100 for spec in specs.values())
    assert "reqres" in {spec.style for spec in specs.values()}


@pytest.mark.parametrize("args", [["--style", "dummyjson", "--style", "reqres"], ["--config", "graph.yaml"]])
def test_serves_until_sigint_then_exits_zero(args):
    proc = subprocess.Popen(
        [sys.executable, "-m", "mocks", *args, "--rate-limit", "off"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        urls = []
        for line in proc.stdout:
            if line.startswith("serving"):
                break
            urls.append(re.search(r"(http://127\.0\.0\.1:\d+/\S*)", line)[1])  # type: ignore[index]
        assert len(urls) >= 2
        for url in urls:
            # The default graph's mocks inject faults; /__health never does.
            base = re.match(r"http://[^/]+", url)[0]  # type: ignore[index]
            with urllib.request.urlopen(base + "/__health", timeout=10) as response:
                assert msgspec.json.decode(response.read())["ok"] is True
        if "--style" in args:
            request = urllib.request.Request(urls[1] + "?page=2", headers={"x-api-key": "reqres-free-v1"})
            with urllib.request.urlopen(request, timeout=10) as response:
                assert msgspec.json.decode(response.read())["page"] == 2
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, err
    assert out.strip().endswith("stopped")
    assert "Traceback" not in err
