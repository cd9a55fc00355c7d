"""Files that appear whole: what the file sinks (csv, jsonl, parquet) share."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def written_whole(ctx: Any, path: str) -> Iterator[Path]:
    """A temporary file beside `path` (relative paths are under run.out) for
    a sink to write: renamed to `path` when the block ends without error, so
    a reader never sees half a file, and removed otherwise (an exception, or
    the stage closed early). An earlier run's file at `path` is removed
    first: it must not stand beside this run's report."""
    final = ctx.output_path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    final.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
