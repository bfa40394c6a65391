"""The ground floor: the pointer text (parse, parse_or_none, render; bytes MAGIC), the chunking grid and
mapped files. Knows nothing of git or the store. May import only ``coral_git.dtypes``, ``errors`` and ``ui``.
"""
