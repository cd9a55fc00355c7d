"""What a stage takes from outside the run or keeps beyond it, through its
context (flow.context.StageContext derives from `Outside`): pages kept for a
resumed run (flow.journal), traffic recorded and played (flow.tape), and
HTTP routes served while the graph runs under `flow serve` (flow.serving)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .run_state import RunState
    from .serving import Handler


class Outside:
    node: str
    stage: str
    run: RunState

    # --- resuming -------------------------------------------------------------------------
    @property
    def keeping(self) -> bool:
        """Whether the run keeps a journal (flow.journal): `keep` and `recall` do something."""
        return self.run.journal is not None

    def keep(self, key: str, value: bytes) -> None:
        """Keep what this stage obtained at a cost under `key` (e.g. a page,
        by its URL), for a resumed run; safe from a kill once it returns (one
        write to the journal's log: call it on the loop, before passing the
        result on, so that a kill costs at most the work in flight). Scoped to
        this node and stage kind. No-op without a journal."""
        if self.run.journal is not None:
            self.run.journal.keep(f"{self.node}/{self.stage}", key, value)

    # --- recorded traffic (flow.tape) ---------------------------------------------------
    @property
    def taping(self) -> str | None:
        """"record" (flow run --record), "play" (flow test: take every exchange
        from the recording, never the network) or None."""
        return None if self.run.tape is None else self.run.tape.mode

    def played(self, key: str) -> dict[str, Any] | None:
        """Playing: the exchange recorded under `key` in this node, or None
        (not recorded: a failure of the test, never a request)."""
        return self.run.tape.played(self.node, key) if self.run.tape is not None else None

    def tape(self, key: str, exchange: dict[str, Any]) -> None:
        """Recording: keep `exchange` (JSON values) under `key` in this node's
        recording, secrets redacted. No-op otherwise."""
        if self.run.tape is not None and self.run.tape.mode == "record":
            self.run.tape.record(self.node, key, exchange)

    def recall(self, key: str) -> bytes | None:
        """What the run being resumed kept under `key`, or None (do the work)."""
        journal = self.run.journal
        return None if journal is None else journal.recall(f"{self.node}/{self.stage}", key)

    # --- clusters (flow run --cluster) --------------------------------------------------
    @property
    def cluster(self) -> str | None:
        """The cluster run's id when this graph runs as a shard of one
        (flow.cluster), for what the shards share (a budget's actor); else None."""
        return self.run.cluster

    # --- serving (flow serve) ---------------------------------------------------------
    @property
    def serving(self) -> bool:
        """Whether the graph runs as a service (`flow serve`): `route` works."""
        return self.run.routes is not None

    @property
    def service_url(self) -> str:
        """The service's base URL (`http://127.0.0.1:8000`), for callbacks."""
        return self.run.service_url

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Serve `method path` (`{name}` segments passed to the handler as
        keyword arguments) while the graph runs under `flow serve`; handlers
        run on the run's loop. Raises RuntimeError under `flow run`."""
        if self.run.routes is None:
            why = f"stage '{self.stage}' serves {method} {path}: run the graph with `flow serve`"
            raise RuntimeError(why)
        self.run.routes.add(method, path, handler)
