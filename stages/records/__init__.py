"""records stage kinds."""
