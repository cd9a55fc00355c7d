"""http stage kinds."""
