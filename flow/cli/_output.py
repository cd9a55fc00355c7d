"""All user-facing output goes through these helpers: results to stdout,
diagnostics to stderr, and `abort` for a clean exit with a code."""

from __future__ import annotations

import sys


class Abort(Exception):
    def __init__(self, message: str = "", code: int = 2) -> None:
        super().__init__(message)
        self.message, self.code = message, code


def out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def info(text: str) -> None:
    sys.stderr.write(text + "\n")


def warning(text: str) -> None:
    sys.stderr.write(text + "\n")


def error(text: str) -> None:
    sys.stderr.write(f"flow: error: {text}\n" if not _located(text) else text + "\n")


def _located(text: str) -> bool:
    """Located messages (`graph.yaml:3:5: ...`, `graph.yaml:2: ...`, `--set
    K=V: ...`, `FLOW__RUN__DEADLINE: ...`) stand on their own."""
    head = text.split(": ", 1)[0]
    return head.rsplit(":", 1)[-1].isdigit() or head.startswith(("--set ", "FLOW__"))
