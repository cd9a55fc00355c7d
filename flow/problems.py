"""Problems found in a graph file, and how they are printed.

Each problem keeps the data path of the offending value; `format_problem`
turns it into `FILE:LINE:COL: message; hint: ...` through the YAML locator.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._yaml import Locator, Path


@dataclass(frozen=True)
class Problem:
    path: Path
    message: str
    hint: str = ""
    key: bool = False  # point at the key rather than the value
    warning: bool = False


class SpecError(Exception):
    """Located problems with a graph file; `str()` is one line per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def format_problem(file: str, locator: Locator, problem: Problem) -> str:
    if problem.path and problem.path[0] == "--set":
        place = f"--set {problem.path[1]}"
    else:
        at = locator.where(problem.path, key=problem.key) or (1, 1)
        place = f"{file}:{at[0]}:{at[1]}"
    text = f"{place}: {problem.message}"
    if problem.hint:
        text += f"; hint: {problem.hint}"
    return f"{place}: warning: {text[len(place) + 2 :]}" if problem.warning else text
