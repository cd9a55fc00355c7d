"""The imitated APIs, one module each; `make_style(name, seed)` builds one."""

from __future__ import annotations

from ._common import BadRequest, Page, Reply, Style
from .cursor import Cursor
from .dummyjson import DummyJSON
from .jsonserver import JSONServer
from .platzi import Platzi
from .reqres import Reqres

__all__ = ["BadRequest", "Page", "Reply", "Style", "make_style"]

_STYLES: dict[str, type[Style]] = {cls.name: cls for cls in (DummyJSON, Platzi, Reqres, JSONServer, Cursor)}


def make_style(name: str, seed: int = 0) -> Style:
    if name == "cursor":
        return Cursor(seed)
    return _STYLES[name]()
