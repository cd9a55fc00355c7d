"""The README's "Your own API in five steps", followed literally.

The section's code blocks are taken from README.md as they stand and run in
order in an empty directory: `sh` blocks line by line through the shell
(with this environment's `flow` first on PATH), `yaml` blocks written to the
file their first line names (`# my.yaml`) or appended to it (`# add to
my.yaml`). Two substitutions, both forced by the test machine and nothing
else: json-server is the copy `.ci/json-server` installed (not `npx`, which
would fetch it), started in the background on a free port of 127.0.0.1
instead of 3000, and the YAML's `localhost:3000` follows it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.json_server import BINARY, free_port, json_server

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def _steps() -> list[tuple[str, str]]:
    text = README.read_text()
    start = text.index("## Your own API in five steps")
    section = text[start : text.index("\n## ", start + 1)]
    return BLOCK.findall(section)


def test_the_five_steps_work_as_written_against_json_server(tmp_path):
    steps = _steps()
    assert [kind for kind, _ in steps] == ["sh", "yaml", "sh", "sh", "yaml", "sh"]
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    outputs: list[subprocess.CompletedProcess[str]] = []
    with contextlib.ExitStack() as servers:
        for kind, body in steps:
            body = body.replace("localhost:3000", f"127.0.0.1:{port}")
            if kind == "yaml":
                first, _, rest = body.partition("\n")
                name = first.removeprefix("# add to ").removeprefix("# ").strip()
                with (tmp_path / name).open("a" if first.startswith("# add to") else "w") as f:
                    f.write(rest)
                continue
            for line in body.strip().splitlines():
                if line.startswith("npx json-server@0.17.4 "):
                    words = shlex.split(line)
                    assert words[2:] == ["--port", "3000", "db.json"], line
                    assert BINARY.exists()
                    servers.enter_context(json_server(tmp_path / "db.json", port))
                    continue
                done = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                                      timeout=120)  # fmt: skip
                assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
                outputs.append(done)
    by_command = {" ".join(o.args.split()[:3]) if isinstance(o.args, str) else "": o for o in outputs}
    plan = by_command["flow plan my.yaml"]
    assert "link" in plan.stdout + plan.stderr  # the detected style, before anything is fetched
    run = by_command["flow run my.yaml"]
    assert 'shop: paginate: style link, from a Link header (rel="next" with _page)' in run.stderr
    assert "shop: normalize: map: auto -> id: id, title: title, price: price, category: categories" in run.stderr
    products = json.loads((tmp_path / "out" / "summary.json").read_text())["products"]
    served = json.loads((tmp_path / "db.json").read_text())["products"]
    assert sorted(p["source_id"] for p in products) == sorted(str(r["id"]) for r in served)
    assert outputs[-1].stdout.startswith(f"flow test my.yaml: passed: {len(products)} records of 'shop'")
