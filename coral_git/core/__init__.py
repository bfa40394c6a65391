"""The ground floor: the pointer text (parse, parse_or_none, try_parse, render; MAGIC_BYTES), the chunking grid and
mapped files. Knows nothing of git or the store. May import only ``coral_git.dtypes``, ``errors`` and ``ui``.
"""
