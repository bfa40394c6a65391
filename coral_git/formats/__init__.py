"""Container formats: each turns a file's bytes into a :class:`Layout` by content, not by suffix."""
