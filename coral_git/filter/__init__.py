"""git's filter: the pkt-line session and spool (``process``), clean (file -> pointer + stored chunks),
streaming clean and smudge (pointer -> exact bytes). The clean data path runs git -> filter -> formats -> store,
the smudge path pointer -> store -> git. May import ``git`` (the Repo), ``store``, ``formats`` and the ground
floor; never ``remote`` (the CLI hands in the on-demand fetcher) or anything above.
"""
