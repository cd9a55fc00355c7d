"""The layering: the engine (`flow/`, its CLI aside) imports neither its
stages nor its mocks; the public API is exactly `flow.__all__`."""

from __future__ import annotations

import ast
from pathlib import Path

import flow

ROOT = Path(__file__).parents[2]
FORBIDDEN = ("stages", "mocks")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, top level or not."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_the_engine_imports_no_stage_and_no_mock():
    engine = [p for p in (ROOT / "flow").rglob("*.py") if "cli" not in p.relative_to(ROOT / "flow").parts]
    assert len(engine) > 15  # the walk did find the engine
    violations = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in engine
        for line, module in imported_modules(path)
        if module.split(".")[0] in FORBIDDEN
    ]
    assert violations == []


def test_the_walk_catches_an_import_inside_a_function(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from mocks._spec import parse_duration\n    import stages.http\n")
    assert imported_modules(sample) == [(2, "mocks._spec"), (3, "stages.http")]


def test_the_public_api_is_exactly_all():
    assert flow.__all__ == [
        "__version__", "ANY", "ConcurrentParams", "DeadLetter", "Duration", "ErrorRecord", "Params", "Rate", "Registry",
        "RunResult", "Runtime", "SAME", "SpecError", "StageContext", "StageKind", "check",
        "default_registry", "load_spec", "parse_spec", "stage",
    ]  # fmt: skip
    for name in flow.__all__:
        assert getattr(flow, name) is not None, name
    from flow.registry import stage

    assert flow.stage is stage
