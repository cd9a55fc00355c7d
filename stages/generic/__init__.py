"""generic stage kinds."""
