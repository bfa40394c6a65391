"""Container formats: each turns a file's bytes into a :class:`Layout` by content, not by suffix.

Readers never copy tensor data and never execute a pickle. May import only the ground floor
(``errors``, ``dtypes``, ``ui``, ``core``).
"""
