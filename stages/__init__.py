"""The stage library: one stage kind per module (paginate, fetch, parse, ...)."""
