"""The chunk store under ``.git/coral``: objects (header + payload), codecs, packs, the chunk store that
verifies every read, and the recent-tensor index used to choose delta bases. Knows nothing of git or of file
formats. May import only the ground floor (``errors``, ``dtypes``, ``ui``, ``core``).
"""
