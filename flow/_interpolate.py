"""Phase 2 of loading a graph: `${VAR}` from the environment, then overrides.

`${VAR}` and `${VAR:-default}` are substituted as text (values taken from the
environment are never echoed in messages); `${mocks.NAME.url}` is filled in from
`refs` once the mocks' ports are known (left as written before). Overrides apply afterwards:
`FLOW__RUN__DEADLINE=30s` variables, then `--set run.deadline=30s`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ._yaml import Path
from .problems import Problem

_VAR = re.compile(r"\$\{([^}]*)\}")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REF = re.compile(r"^mocks\.([A-Za-z_][A-Za-z0-9_-]*)\.url$")
ENV_PREFIX = "FLOW__"


def interpolate(
    value: Any,
    path: Path,
    env: Mapping[str, str],
    problems: list[Problem],
    refs: Mapping[str, str] | None = None,
    secrets: dict[str, str] | None = None,
) -> Any:
    """`value` with `${...}` filled in; `refs` maps mock names to their URLs
    (without it, `${mocks.NAME.url}` stays as written). Values taken from the
    environment go into `secrets` (value -> `${NAME}`), for `scrub`."""
    if isinstance(value, dict):
        return {k: interpolate(v, (*path, k), env, problems, refs, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, (*path, i), env, problems, refs, secrets) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        body = match[1]
        ref = _REF.match(body)
        if ref:  # ${mocks.NAME.url}: resolved once the mocks have started
            return refs[ref[1]] if refs is not None and ref[1] in refs else match[0]
        name, sep, default = body.partition(":-")
        if not _VAR_NAME.match(name):
            problems.append(
                Problem(path, f"'${{{body}}}' is neither ${{VAR}}, ${{VAR:-default}} nor ${{mocks.NAME.url}}")
            )
            return match[0]
        if name in env:
            if secrets is not None and _worth_hiding(env[name]):
                secrets[env[name]] = f"${{{name}}}"
            return env[name]
        if sep:
            return default
        problems.append(
            Problem(
                path,
                f"environment variable {name} is not set",
                f"export {name}, or write ${{{name}:-default}}",
            )
        )
        return match[0]

    # Substituted values stay strings; decoding is lax (strict=False), so
    # "${WORKERS:-4}" still fills an int field and an API key "0123" stays text.
    return _VAR.sub(substitute, value)


def _worth_hiding(value: str) -> bool:
    """Short values (`${WORKERS}` = 4, `${STYLE}` = page) would scrub
    unrelated text; keys, tokens and secret paths are longer."""
    return len(value) >= (8 if value.isdigit() else 6)


def scrub(text: str, secrets: Mapping[str, str]) -> str:
    """`text` with every value taken from the environment replaced by its
    `${NAME}`: messages, reports and spans never echo them."""
    for value, name in secrets.items():
        for form in _forms(value):  # as written, and as a URL carries it
            if form in text:
                text = text.replace(form, name)
    return text


def _forms(value: str) -> tuple[str, ...]:
    from urllib.parse import quote, quote_plus

    forms = (value, quote(value, safe=""), quote_plus(value), quote(value), quote(value, safe="+"))
    return tuple(dict.fromkeys(forms))


def scalar(text: str) -> Any:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, str | int | float | bool) or value is None else text


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    steps = dotted.split(".")
    node: Any = data
    for step in steps[:-1]:
        if isinstance(node, list) and step.isdigit():
            node = node[int(step)]
            continue
        if not isinstance(node, dict):
            raise KeyError(step)
        node = node.setdefault(step, {})
    last = steps[-1]
    if isinstance(node, list) and last.isdigit():
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise KeyError(last)


def overrides_from_env(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """`FLOW__RUN__DEADLINE=30s` -> (`FLOW__RUN__DEADLINE`, `run.deadline=30s`):
    where to point a message (the variable, never its value) and what to set."""
    return [
        (name, f"{name[len(ENV_PREFIX) :].lower().replace('__', '.')}={value}")
        for name, value in sorted(env.items())
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX)
    ]


def references(value: Any, path: Path = ()) -> list[tuple[str, Path]]:
    """(mock name, path) of every ${mocks.NAME.url} in the data."""
    if isinstance(value, dict):
        return [r for k, v in value.items() for r in references(v, (*path, k))]
    if isinstance(value, list):
        return [r for i, v in enumerate(value) for r in references(v, (*path, i))]
    if isinstance(value, str):
        return [(m[1], path) for body in _VAR.findall(value) if (m := _REF.match(body))]
    return []
